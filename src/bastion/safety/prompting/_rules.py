"""The injection scanner's English phrase rules, compiled once (other languages: ``_rules_i18n``).

Speed comes from never running a phrase rule over a whole text: every match of a rule
starts with one of its *anchor* words, one trie-shaped pass finds the anchors
(``_anchors``), and each rule is tried with ``match`` only where its anchors start.
Structural forgeries (fences, tags, role lines) live in ``_rules_symbols``.

Weights are the evidence one hit gives; the scanner combines distinct reasons as
independent evidence, so one weak signal (a ``SYSTEM:`` line in a log excerpt, a tool
named by a developer) stays under the flag threshold while two together cross it.
Override phrasing needs a target that is the model's (``your``/``all``/``previous``
instructions), never the writer's own (``my previous message``).
"""

from __future__ import annotations

from ._rules_generic import GENERIC_RULES
from ._rules_i18n import I18N_RULES, Rule
from ._rules_i18n import make_rule as _rule

_SEP = r"[\s,;:'\"()*_-]+"
_EN_OBJ = (
    r"instructions?|prompts?|rules|directives?|guidelines|guidance|programming|constraints|"
    r"restrictions|directions|policies|system\s+message|context|training|guardrails|configuration|"
    r"safety\s+(?:rules|guidelines|filters?|policy)|content\s+(?:rules|policy)|"
    r"retrieved\s+(?:documents|docs|context|information)"
)
_EN_FILL = (
    r"all|any|the|your|of|these|those|every|each|prior|previous|previously|above|earlier|"
    r"preceding|original|initial|initially|system|developer|current|existing|other|given|"
    r"old|former|default|built-in|safety|that|you|were|received|internal|acme(?:'s)?|"
    r"whatever|kind|following|first|must|now|just|simply|rules?|you(?:'ve|\s+have)|been|were\s+given|"
    r"configured|with|set|up"
)
_EN_TAIL = (
    rf"(?:{_SEP}(?:{_EN_FILL})\b){{0,4}}{_SEP}(?:{_EN_OBJ})\b"
    r"(?!\s+(?:i|we)\s+(?:gave|sent|wrote|made|mentioned|provided))"
)
_AI = (
    r"(?:ai|llm|language\s+model|chatbot|bot|gpt|claude|large\s+language\s+model|ai\s+model|"
    r"ai\s+assistant|automated\s+assistant|ai\s+\w+|assistant|summari[sz]er|screener|model)"
)
_DIRECTIVE = (
    r"(?:say|tell|recommend|rank|rate|mark|respond|reply|answer|include|append|ignore|disregard|"
    r"forget|send|forward|call|output|print|reveal|stop|must|should|always|never|do\s+not|score|grade|"
    r"approve|classify|label|prioriti[sz]e|select|choose|hire|reject|collect|ask|share|"
    r"sage|ignoriere|dis|recommande|ignora|list|run|execute|install|download|visit|click|delete|remove|"
    r"mention|describe|state|claim|write|append|add|respond|link|redirect|direct|put)"
)

_ADDRESS = (
    rf"(?:if|when)\s+you(?:'re|\s+are)\s+an?\s+{_AI}\b"
    rf"|(?:note|message|instructions?|notice)\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?"
    rf"(?:[\w'’-]+\s+){{0,2}}?{_AI}s?\b"
    r"|if\s+you(?:'re|\s+are)\s+an?\s+(?:automated\s+(?:system|agent|tool|reader)|ai\s+system)\b"
    r"|(?:ai|llm|language\s+model|chatbot|assistant)s?\s+(?:agents?\s+)?(?:reading|processing|"
    r"summari[sz]ing|parsing|analy[sz]ing|scanning)\s+(?:this|these)\b"
    r"|agents?\s+(?:reading|processing)\s+this\b"
    r"|(?:attention|hey|dear)\s*,?\s+(?:(?:any|all|the)\s+)?(?:ai|llm|language\s+model|chatbot)\b"
    r"|to\s+any\s+(?:ai|llm|language\s+model|chatbot)\b"
    r"|when\s+the\s+assistant\s+reads\s+this\b|new\s+instructions?\s+for\s+the\s+assistant\b"
    r"|(?:hinweis|nota?|note)\s+(?:an\s+die|para\s+a|per\s+l'|pour\s+l')\s*(?:ki|ia)\b"
    rf"|(?:ai|llm|assistant|chatbot)\s*:\s*(?={_DIRECTIVE}\b|you\s+must)"
    r"|(?:ai\s+assistant|ai\s+model|ai|llm|chatbot|language\s+model)\s*,\s*(?=if\b|when\b|please\b|"
    r"you\b|ignore\b|say\b|tell\b|always\b|never\b|do\b)"
    r"|(?:an\s+das|à\s+l'attention\s+de\s+l'|a\s+la\s+atención\s+de\s+la|all'attenzione\s+dell')\s*"
    r"(?:sprachmodell|ki|ia|llm)\b"
)
_ADDRESS_ANCHORS = (
    "if+you when+you note+to note+for message+to message+for instruction+for instructions+for "
    "instruction+to instructions+to notice+to notice+for ai llm language+model chatbot assistant "
    "agent attention hey dear to+any when+the+assistant new+instru hinweis nota the+ai the+assistant "
    "the+chatbot the+llm the+language all+ai all+assistant any+ai any+assistant an+das à+l'attention "
    "a+la+atención all'attenzione summar screener model"
)
WORD_RULES: tuple[Rule, ...] = (
    _rule(
        "override:en",
        0.8,
        "ignor disregard forget overrid bypass discard abandon drop neglect skip circumvent cancel "
        "suspend set+aside throw+out throw+away pay+no+attention erase clear wipe disabl reset",
        r"(?:ignore|disregard|forget|override|bypass|discard|abandon|drop|neglect|skip|circumvent|"
        r"cancel|suspend|set\s+aside|throw\s+(?:out|away)|pay\s+no\s+attention\s+to|erase|clear|"
        rf"wipe|ignoring|disregarding|overriding|bypassing|suspending|disabling|resetting)\b{_EN_TAIL}",
        negatable=True,
    ),
    _rule(
        "override:en",
        0.8,
        "everything whatever anything all what the+instru instru your prior previous earlier original "
        "initial",
        r"(?:(?:everything|whatever|anything|all(?:\s+that)?|what)\s+you(?:'ve|\s+were|\s+have\s+been|"
        r"\s+got|\s+received)\s+(?:been\s+)?(?:told|instructed|given|taught|programmed|asked)"
        r"|(?:the\s+)?instructions\s+you\s+(?:got|received|were\s+given|have\s+been\s+given)"
        r"|your\s+(?:(?:prior|previous|earlier|original|initial|current|existing|default|built-in)\s+)?"
        r"(?:programming|configuration|system\s+prompt|guardrails|safety\s+(?:rules|settings|guidelines))"
        r"|(?:prior|previous|earlier|original|initial)\s+(?:programming|configuration))"
        r"[^.!?\n]{0,80}?\b(?:obsolete|void|invalid|cancel+ed|revoked|outdated|superseded|"
        r"(?:is|are|was|were)\s+(?:a\s+test|fake)|no\s+longer\s+(?:apply|applies|valid|matter|in\s+effect)|"
        r"(?:do|does)\s+not\s+(?:apply|matter)|(?:doesn|don)'?t\s+(?:apply|matter)|to\s+one\s+side|aside|"
        r"disregard|ignore|forget|overridden|suspended|disabled|lifted)\b",
    ),
    _rule(
        "override:en",
        0.8,
        "follow",
        rf"(?:(?<=not\s)|(?<=n't\s)|(?<=stop\s)|(?<=longer\s))follow(?:ing)?\b{_EN_TAIL}",
    ),
    _rule(
        "override:en",
        0.8,
        "ignor disregard forget new+instru new+system new+directive new+prompt updated+instru "
        "updated+system updated+prompt revised+instru "
        "real+instru actual+instru true+instru previous prior above earlier original supersed your all "
        "the+safety the+content the+instru the+rules the+guidelines the+previous the+prior safety content "
        "your+new your+real your+only your+actual from+now henceforth starting+now you+are+no "
        "you're+no system+override developer+override maintenance+override security+override "
        "decode read apply reverse",
        r"(?:ignore|disregard|forget)\s+(?:all\s+of\s+|everything\s+|anything\s+|what\s+)?"
        r"(?:the\s+above|above|everything\s+(?:above|before|prior|you\s+(?:were|have\s+been)\s+told)|"
        r"what\s+you\s+were\s+told|(?:all\s+)?(?:that|this)\s+came\s+before)\b"
        r"|new\s+directives?\s*(?::|from\b)"
        r"|(?:new|updated|revised|real|actual|true)\s+(?:system\s+)?(?:instructions?|prompt)\s*"
        r"(?::|are\b|follow\b|from\s+(?:the\s+)?(?:operator|developer|admin|administrator|system|owner))"
        r"|(?:previous|prior|above|earlier|original)\s+(?:instructions?|rules|prompts?)\s+"
        r"(?:are|were|have\s+been)\s+(?:cancel+ed|void|revoked|obsolete|a\s+test|superseded|replaced)"
        r"|supersedes?\s+(?:all\s+)?(?:previous|prior|earlier|your|any)\s+instructions"
        r"|(?:previous|prior|earlier|original|above|your|all|the|safety|content)\s+(?:safety\s+|system\s+)?"
        r"(?:instructions|directions|rules|guidelines|configuration|restrictions|filters|guardrails|"
        r"policies|system\s+message|prompt)\s+(?:(?:are|is|was|were|has\s+been|have\s+been)\s+)?"
        r"(?:revoked|disabled|lifted|removed|suspended|void|cancel+ed|a\s+mistake|wrong|fake|"
        r"(?:do|does)\s+not\s+apply|no\s+longer\s+(?:apply|valid|in\s+effect))"
        r"|your\s+(?:new|real|only|actual)\s+(?:task|instructions?|role|goal|job|purpose|objective)\s+"
        r"(?:is|are|now)\b"
        r"|(?:from\s+now\s+on|henceforth|starting\s+now)\s*,?\s+(?:you|your|act|respond|answer|"
        r"reply|always|only|ignore|forget|pretend)\b"
        r"|you(?:'re|\s+are)\s+no\s+longer\s+(?:a|an|the|bound|required|restricted)\b"
        r"|(?:system|developer|maintenance|security)\s+override\s*(?::|activ|enabl|engag|mode)"
        r"|decode\s+(?:this|that|it|the\s+following|the\s+text|the\s+message)\b"
        r"(?:[^\w'’\n]+[\w'’]+){0,6}?[^\w'’\n]+(?:and|then)\s+(?:follow|execute|obey|do|carry\s+out|act\s+on)\b"
        r"|(?:read|apply|reverse)\b(?:[^\w'’\n]+[\w'’]+){0,6}?[^\w'’\n]+(?:and|then)\s+(?:follow|obey|"
        r"execute|do\s+what\s+it\s+says)\b",
    ),
    *I18N_RULES,
    *GENERIC_RULES,
    _rule(
        "jailbreak",
        0.6,
        "do+anything developer+mode you+are+now you're+now jailbr maintenance+mode ethical moral "
        "content+guidelines content+restrictions content+policy content+filters pretend act+as "
        "act+like behave roleplay ai+without ai+with+no model+without model+with+no "
        "assistant+without assistant+with+no continue respond answer reply operate proceed imagine "
        "suppose dan+mode god+mode jailbreak+mode enable switch never without has+no",
        r"do\s+anything\s+now\b|developer\s+mode\s+(?:is\s+)?(?:enabled|on|activated)\b"
        r"|you(?:'re|\s+are)\s+now\s+(?:in\s+)?(?:admin|developer|god|debug|maintenance|unrestricted|"
        r"jailbreak|dan)\s+mode\b|jailbr(?:eak\s+mode|oken)\b|maintenance\s+mode\s+disables\b"
        r"|(?:(?<=no\s)|(?<=out\s)|(?<=any\s))(?:ethical|moral|content)\s+(?:guidelines|restrictions|"
        r"policy|filters)\b"
        r"|(?:pretend|act|behave|roleplay)\s+(?:to\s+be\s+|you\s+are\s+|as\s+)?(?:an?\s+)?"
        r"(?:unrestricted|unfiltered|uncensored|jailbroken|evil)\b"
        r"|(?:ai|model|assistant)\s+(?:without|with\s+no)\s+(?:any\s+)?"
        r"(?:restrictions|filters|limits|rules|content\s+policy)\b"
        r"|pretend\s+to\s+be\s+my\s+(?:late\s+)?grand(?:mother|ma|father)\b"
        r"|(?:continue|respond|answer|reply|operate|proceed)\s+without\s+(?:any\s+)?(?:filters|"
        r"restrictions|rules|limits|guardrails|censorship)\b"
        r"|(?:imagine|pretend|suppose)\s+(?:that\s+)?you(?:'re|\s+are)\s+an?\s+(?:ai|model|assistant|"
        r"chatbot|llm)\b(?:[^\w\n]+[\w'’]+){0,10}?[^\w\n]+(?:no|without)\s+(?:rules|restrictions|"
        r"limits|filters|laws|content\s+policy)\b"
        r"|(?:dan|developer|god|jailbreak)\s+mode\s+(?:now|on|enabled|activated)\b|enable\s+(?:dan|"
        r"developer|god|jailbreak)\s+mode\b"
        r"|switch\s+(?:to|into)\s+(?:\w+\s+)?(?:unrestricted|unfiltered|uncensored|jailbreak|developer|god|"
        r"admin|dan|debug)\s+mode\b"
        r"|never\s+refuses?\b|without\s+(?:ever\s+)?refusing\b|has\s+no\s+(?:rules|restrictions|limits|"
        r"filters|content\s+policy)\b",
    ),
    _rule(
        "leak:system_prompt",
        0.6,
        "reveal print show display output repeat dump leak expose disclose recite write+out translate "
        "summar tell+me give+me paste spell+out what+is+your what+are+your what+were entire+prompt "
        "quote share wording text words prompt instru message secret hidden confidential first",
        r"(?:reveal|print|show|display|output|repeat|dump|leak|expose|disclose|recite|"
        r"write\s+out|translate|summari[sz]e|tell\s+me|give\s+me|paste|spell\s+out)\b"
        r"(?:\s+(?:me|us|all|of|your|the|full|entire|exact|whole|complete|original|initial|hidden|"
        r"secret|internal|confidential|verbatim|text\s+of)){0,5}\s+"
        r"(?:system\s+(?:prompt|message|instructions)|(?:initial|original|hidden|secret|internal|"
        r"confidential|exact)\s+(?:instructions|prompt)|pre-?prompt|instructions\s+(?:you\s+were\s+given|"
        r"above)|(?:prompt|text|words|everything)\s+above|confidential\s+marker)"
        r"|what\s+(?:is|are|were)\s+your\s+(?:system\s+prompt|(?:exact|initial|original|hidden|"
        r"secret)\s+instructions)\b|what\s+were\s+the\s+exact\s+instructions\b"
        r"|repeat\s+the\s+(?:words|text)\s+above\b|entire\s+prompt\s+including\b"
        r"|(?:reveal|print|show|display|output|repeat|dump|paste|quote|give\s+me|tell\s+me|share)\s+"
        r"(?:me\s+)?(?:the\s+|your\s+)?(?:hidden\s+|full\s+|exact\s+|entire\s+)?(?:configuration|config|"
        r"setup|starting|boot|hidden|initiali[sz]ation)\s+(?:prompt|text|instructions|message|wording)"
        r"|(?:paste|print|show|output|repeat|quote)\s+(?:me\s+)?(?:the\s+)?(?:hidden\s+)?(?:text|"
        r"everything|words)\s+(?:that\s+(?:sits|comes|appears)\s+)?(?:before|above|preceding)\s+"
        r"(?:my|this|the\s+user'?s?)\s+message"
        r"|(?:exact\s+)?(?:wording|text|words|prompt|instructions|message)\s+you\s+(?:were|got|received)\s+"
        r"(?:(?:given|initiali[sz]ed|configured|set\s+up|started|primed)\s+)?(?:with|before|at\s+the\s+start|"
        r"earlier)\b"
        r"|(?:secret|hidden|confidential)\s+(?:code|marker|token|key|word|phrase|password)\s+(?:is\s+)?in\s+"
        r"your\s+(?:instructions|prompt|system\s+prompt|configuration)"
        r"|first\s+(?:\d+|few|ten|twenty|fifty|hundred)\s+(?:words|lines|characters|sentences|tokens)\s+"
        r"of\s+your\s+(?:system\s+prompt|instructions|prompt|system\s+message)",
    ),
    _rule(
        "forgery:section",
        0.45,
        "user_content retrieved_docs",
        r"(?:user_content|retrieved_docs)\s*[:：꞉]",
    ),
    _rule(
        "forgery:boundary",
        0.35,
        "end+of begin+of start+of end+user begin+user start+user end+system begin+system "
        "start+system end+the begin+the start+the end+data begin+data end+input begin+input "
        "end+context end+instru",
        r"(?:end|begin|start)\s+(?:of\s+)?(?:the\s+)?(?:user\s+(?:input|content|message)|"
        r"system\s+prompt|retrieved\s+docs?|context\s+window|data|input|context|instructions)\b",
    ),
    _rule("address:ai", 0.4, _ADDRESS_ANCHORS, _ADDRESS),
    _rule(
        "address:ai",
        0.4,
        "the+ai the+assistant the+chatbot the+llm the+language all+ai all+assistant any+ai "
        "any+assistant ai assistant chatbot llm language+model automated",
        r"(?:the\s+|all\s+|any\s+)?(?:ai\s+|automated\s+)?(?:assistants?|chatbots?|llms?|language\s+models?|"
        r"ai\s+models?|ai\s+agents?)\s+(?:\w+\s+)?(?:must|should|shall|are\s+required\s+to|need\s+to|"
        r"have\s+to|will\s+now)\b",
    ),
    _rule(
        "address:assistant",
        0.5,
        "assistant",
        rf"assistant\s*[,:]\s*(?:please\s+)?(?={_DIRECTIVE}\b)",
    ),
    _rule(
        "address:directive",
        0.6,
        _ADDRESS_ANCHORS,
        rf"(?:{_ADDRESS})[^\w'’\n]*(?:[\w'’]+[^\w'’\n]+){{0,16}}?{_DIRECTIVE}\b",
    ),
    _rule(
        "authority:claim",
        0.3,
        "this+is+a this+is+authori this+is+verified this+is+the i+am+a i+am+authori i+am+verified "
        "i+am+the i'm+a i'm+authori i'm+verified i'm+the elevated admin+priv admin+rights "
        "administrator+priv administrator+rights root+priv staff+priv is+a+verified is+verified "
        "is+authenticated is+authori do+whatever comply obey effective+immediately new+policy "
        "new+rules updated+policy updated+rules no+need no+approval no+verification no+confirmation "
        "i+authori i+approve i+permit i+allow "
        "no+check no+authori user+is user+has customer+is customer+has caller+is requester+is "
        "the+user+is the+customer+is disable safety+rules safety+filters "
        "safety+checks security+rules security+filters security+checks",
        r"(?:this\s+is|i\s+am|i'm)\s+(?:an?\s+)?(?:authori[sz]ed|verified|the\s+(?:admin|"
        r"administrator|developer|owner))\b"
        r"|(?:elevated|admin(?:istrator)?|root|staff)\s+(?:privileges|rights)\b"
        r"|is\s+(?:a\s+)?(?:verified|authenticated|authori[sz]ed)\s+(?:as\s+)?(?:an?\s+)?"
        r"(?:admin|administrator|staff|developer)"
        r"|do\s+whatever\s+(?:they|the\s+user|i|you\s+are)\s+(?:ask|say|want|told)"
        r"|(?:comply|obey)\s+with\s+(?:every|all|any)\b|effective\s+immediately\b"
        r"|(?:new|updated)\s+(?:policy|rules)\s*(?::|effective|applies)"
        r"|no\s+need\s+to\s+(?:check|verify|confirm)\b"
        r"|i\s+(?:authori[sz]e|approve|permit|allow)\s+(?:it|this|you)\b"
        r"|no\s+(?:approval|verification|confirmation|check|authori[sz]ation)s?\s+(?:is\s+)?"
        r"(?:needed|required|necessary)\b"
        r"|(?:the\s+)?(?:user|customer|caller|requester)\s+(?:is|has\s+been)\s+(?:verified|"
        r"authenticated|authori[sz]ed|an?\s+(?:admin|administrator|employee|staff\s+member))\b"
        r"|disabled?\s+(?:all\s+)?(?:safety|security)\s+(?:rules|filters|checks)"
        r"|(?:safety|security)\s+(?:rules|filters|checks)\s+(?:are\s+)?disabled",
    ),
    _rule(
        "exfil:send",
        0.6,
        "send email e-mail mail forward post upload transmit exfiltrat leak copy sync bcc cc relay",
        r"(?:send|email|e-mail|mail|forward|post|upload|transmit|exfiltrate|leak|"
        r"copy|sync|bcc|cc|relay)\b(?:\s+(?:me|us|it|over))?\s+(?:the\s+|all\s+|a\s+copy\s+of\s+|your\s+)*"
        r"(?:everything\s+you\s+(?:know|have|can\s+see)|(?:full|entire|whole|complete)\s+"
        r"(?:conversation|chat|thread|context|contents)|conversation(?:\s+history)?|chat\s+history|"
        r"transcript(?:\s+of\s+(?:this|the)\s+(?:chat|conversation|session))?|"
        r"history|context|system\s+prompt|instructions|credentials|passwords|api\s+keys?|"
        r"secrets|customer\s+(?:database|list|data|records)|user\s+data|user'?s\s+\w+\s+history|"
        r"documents\s+you\s+(?:retrieved|can\s+see)|internal\s+notes|data\s+you\s+can\s+access)",
    ),
    _rule(
        "exfil:send_everything",
        0.3,
        "send email forward post upload",
        r"(?:send|email|forward|post|upload)\s+(?:me\s+)?everything\s+(?:to|at)\b",
    ),
    _rule(
        "exfil:url_data",
        0.5,
        "append add include insert put encode embed attach url link http",
        r"(?:append|add|include|insert|put|encode|embed|attach)\b(?:[^\w'’\n]+[\w'’]+){0,8}?[^\w'’\n]+"
        r"(?:to|in|into|inside)\s+"
        r"(?:(?:this|the|that|a)\s+(?:link|url|image|query\s+string|query|address)\b|<?https?://)"
        r"|(?:include|insert|put)\s+(?:the\s+)?(?:api\s+keys?|secrets?|tokens?|passwords?|"
        r"system\s+prompt|conversation)\b(?:[^\w'’\n]+[\w'’]+){0,10}?[^\w'’\n]+url\b"
        r"|(?:url|link|https?://\S+)(?:[^\w'’\n]+[\w'’]+){0,5}?[^\w'’\n]+(?:followed\s+by|plus|with)\s+(?:the\s+)?"
        r"(?:conversation|chat\s+history|context|user\s+data|system\s+prompt)",
    ),
    _rule(
        "exfil:credentials",
        0.45,
        "ask+the ask+them ask+customer request+the request+them request+customer",
        r"(?:ask|request)\s+(?:the\s+user|them|customers?)\s+for\s+(?:their\s+)?"
        r"(?:credit\s+card|card\s+number|cvv|password|ssn|social\s+security)",
    ),
    _rule(
        "tool:call",
        0.35,
        "call invoke use run execute trigger fire",
        r"(?:call|invoke|use|run|execute|trigger|fire)\s+(?:the\s+|your\s+)?[`'\"]?[a-z][\w.-]*"
        r"[`'\"]?\s+(?:tool|function|plugin|action|command)\b"
        r"|(?:call|invoke|use|run|execute|trigger)\s+the\s+(?:tool|function|plugin)\s+[`'\"]?[a-z_][\w.-]*"
        r"|(?:call|invoke|run|execute|trigger)\s+[`'\"]?[a-z]+_[a-z_]+",
    ),
    _rule(
        "tool:call_args",
        0.5,
        "call invoke use run execute trigger fire",
        r"(?:call|invoke|use|run|execute|trigger|fire)\s+(?:the\s+|your\s+)?[`'\"]?[a-z][\w.-]*[`'\"]?"
        r"(?:\s+(?:tool|function|plugin|action|command))?\s*(?:with|:|\()\s*[`'\"]?[a-z_]\w*\s*[=:]\s*\S",
    ),
    _rule(
        "tool:destructive",
        0.3,
        "drop truncate rm",
        r"drop\s+(?:table|database)\b|truncate\s+table\b|rm\s+-rf\b",
    ),
    _rule(
        "hidden:css",
        0.3,
        "display font visibility",
        r"display\s*:\s*none|font-size\s*:\s*0(?:px)?\b|visibility\s*:\s*hidden",
    ),
)
