"""The support drafter: the seed checklist's example app, built on Bastion end to end.

An agent opens a ticket and asks for a draft reply. The app retrieves the help-center
documents that agent may see, renders a named, versioned prompt template through the
injection-aware builder, lets the model call one sandboxed tool, and streams the draft
into the page with its citations. Bastion is reached either in-process (``Gateway``,
the default) or over HTTP with the official ``anthropic`` SDK (``--via-gateway``); the
drafting logic is the same. When Bastion answers degraded, the page says so and the
manual reply box keeps working.

    settings   command line and defaults
    seed       the shipped tickets, agents, invoices and help-center documents
    tickets    the ticket desk's own SQLite store: tickets, replies, drafts
    knowledge  authorized retrieval over the help center (SQLite FTS5)
    prompts    the ``support-drafter`` template versions
    billing    the ``lookup_last_invoice`` tool and its sandbox
    backends   what the drafter needs from Bastion, and the library (in-process) way
    sdk_backend  the gateway way: the official anthropic SDK against ``bastion serve``
    simscript  what the simulator says when it plays the drafter
    drafter    one draft: retrieve, build, call, run tools, stream
    pages      server-rendered HTML
    web        the ASGI app
    main       wiring and start-up
"""
