"""The ``bastion`` command: serve, sim, keys, config."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from typer.core import TyperGroup

from .cli_common import ConfigOpt

# under the names the commands below have always used (a test imports _state_where from here)
from .cli_common import command_config as _load
from .cli_common import run_coroutine as _run
from .cli_common import state_where as _state_where
from .cli_common import with_store as _with_store
from .config import LogFormat, LogLevel
from .errors import BastionError, ConfigError

# Commands whose modules (rich tables, the demo's incidents, the eval runner) `bastion serve`
# never needs: each is imported when it is run or help lists it, not at every start.
# name -> (module, attribute: a command function or a Typer app)
_LAZY: dict[str, tuple[str, str]] = {
    "check": ("bastion.check.cli", "check_command"),
    "spend": ("bastion.spend", "spend_command"),
    "demo": ("bastion.demo", "demo_command"),
    "eval": ("bastion.evals.cli", "eval_app"),
}


class _LazyGroup(TyperGroup):
    """The top-level group: the ``_LAZY`` commands are built from their module on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = [n for n in ("check", "spend", "demo") if n not in self.commands]
        names += list(self.commands)
        if "eval" not in self.commands:
            names.insert(names.index("config") + 1 if "config" in names else len(names), "eval")
        return names

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in _LAZY and cmd_name not in self.commands:
            module, attr = _LAZY[cmd_name]
            target = getattr(importlib.import_module(module), attr)
            if isinstance(target, typer.Typer):
                cmd: Any = typer.main.get_group(target)
            else:
                one = typer.Typer()
                one.command(cmd_name)(target)
                cmd = typer.main.get_command(one)
            cmd.name = cmd_name
            self.add_command(cmd, cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    cls=_LazyGroup,
    add_completion=False,
    no_args_is_help=True,
    help="Bastion: the production-hardening LLM gateway.",
)
keys_app = typer.Typer(no_args_is_help=True, help="Virtual API keys (stored hashed).")
config_app = typer.Typer(no_args_is_help=True, help="Configuration files.")
app.add_typer(keys_app, name="keys")
app.add_typer(config_app, name="config")

# a key's limits and metadata (auth.with_fields validates them; "none" removes one on update)
DailyOpt = Annotated[str | None, typer.Option(help="daily budget in USD (cost timezone's day)")]
MonthlyOpt = Annotated[str | None, typer.Option(help="calendar-month budget in USD")]
RpmOpt = Annotated[str | None, typer.Option(help="requests per minute")]
TpmOpt = Annotated[str | None, typer.Option(help="tokens per minute")]
ModelsOpt = Annotated[str | None, typer.Option(help="allowed models, comma-separated (gpt-* too)")]
ExpiresOpt = Annotated[str | None, typer.Option(help="expiry: ISO date or time (2027-01-01)")]
TeamOpt = Annotated[str | None, typer.Option(help="team (for spend by team)")]
OwnerOpt = Annotated[str | None, typer.Option(help="owner (who to ask about this key)")]


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port (0 = any free port)")] = None,
    log_level: Annotated[
        str | None, typer.Option(help="debug | info | warning | error (info: one line per call)")
    ] = None,
    log_format: Annotated[str | None, typer.Option(help="text | json")] = None,
    workers: Annotated[
        int,
        typer.Option(help="worker processes on one port (Redis, or embedded through a state host)"),
    ] = 1,
    reuse_port: Annotated[
        bool | None,
        typer.Option(
            help="with --workers: a SO_REUSEPORT socket per worker (the default on Linux: the "
            "kernel spreads new connections evenly) or one shared socket"
        ),
    ] = None,
) -> None:
    """Run the gateway (embedded defaults: SQLite, the simulator when no provider key is set)."""
    cfg = _load(config)
    from .server.serve import serve_gateway, workers_refusal

    refused = workers_refusal(cfg, workers)
    if refused is not None:
        typer.echo(f"error: {refused}", err=True)
        raise typer.Exit(2)
    logging_opts = {"log_level": log_level, "log_format": log_format}
    for opt, value, allowed in (
        ("log-level", log_level, get_args(LogLevel)),
        ("log-format", log_format, get_args(LogFormat)),
    ):
        if value is not None and value not in allowed:
            typer.echo(f"error: --{opt} must be one of {', '.join(allowed)}", err=True)
            raise typer.Exit(2)
    chosen = {k: v for k, v in logging_opts.items() if v is not None}
    if chosen:
        cfg = cfg.model_copy(update={"server": cfg.server.model_copy(update=chosen)})

    bind_host, bind_port = host or cfg.server.host, cfg.server.port if port is None else port
    if workers > 1:
        from .server.workers import Supervisor

        sup = Supervisor(
            cfg, host=bind_host, port=bind_port, workers=workers, reuse_port=reuse_port
        )
        raise typer.Exit(sup.run())
    try:
        _run(serve_gateway(cfg, host=bind_host, port=bind_port))
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None


@app.command()
def sim(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 9100,
    ttft_ms: Annotated[float, typer.Option(help="default time to first token")] = 0.0,
    chunk_ms: Annotated[float, typer.Option(help="default gap between stream chunks")] = 0.0,
) -> None:
    """Run the provider simulator as its own server (every provider wire Bastion speaks)."""
    from .providers.sim import serve as sim_serve

    sim_serve(host=host, port=port, ttft_ms=ttft_ms, chunk_ms=chunk_ms)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="a name for the key")],
    feature: Annotated[
        str | None, typer.Option(help="the feature calls with this key belong to")
    ] = None,
    user: Annotated[
        str | None, typer.Option(help="the end-user id, when the key is one user's")
    ] = None,
    roles: Annotated[str | None, typer.Option(help="comma-separated roles")] = None,
    daily_usd: DailyOpt = None,
    monthly_usd: MonthlyOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    models: ModelsOpt = None,
    expires: ExpiresOpt = None,
    team: TeamOpt = None,
    owner: OwnerOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Mint a key; the secret is printed once and stored only as a hash."""
    from .auth import new_key, with_fields

    cfg = _load(config, need_store=True)
    role_list = tuple(r.strip() for r in (roles or "").split(",") if r.strip())
    secret, record = new_key(name, feature=feature, user=user, roles=role_list)
    given = _key_fields(daily_usd, monthly_usd, rpm, tpm, models, expires, team, owner)
    record = _or_exit(lambda: with_fields(record, given, cfg.cost.timezone))

    async def go(store: Any) -> None:
        await store.create_key(record)

    _or_exit(lambda: _run(_with_store(cfg, go)))
    typer.echo(
        f"id:     {record.id}\nname:   {record.name}\nsecret: {secret}\n(the secret is shown once)"
    )
    for line in _limit_lines(record):
        typer.echo(line)


@keys_app.command("update")
def keys_update(
    key: Annotated[str, typer.Argument(help="key id")],
    daily_usd: DailyOpt = None,
    monthly_usd: MonthlyOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    models: ModelsOpt = None,
    expires: ExpiresOpt = None,
    team: TeamOpt = None,
    owner: OwnerOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Change a key's limits or metadata ("none" removes one); replicas see it within the key cache time."""
    from .auth import with_fields

    cfg = _load(config, need_store=True)
    given = _key_fields(daily_usd, monthly_usd, rpm, tpm, models, expires, team, owner)
    if not given:
        typer.echo("error: nothing to change: pass at least one limit or metadata option", err=True)
        raise typer.Exit(2)

    async def go(store: Any) -> Any:
        current = await store.get_key(key)
        if current is None or current.revoked:
            return None
        updated = with_fields(current, given, cfg.cost.timezone)
        return updated if await store.update_key(updated) else None

    record = _or_exit(lambda: _run(_with_store(cfg, go)))
    if record is None:
        typer.echo(f"no active key with id {key!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"updated {record.id} ({record.name})")
    for line in _limit_lines(record):
        typer.echo(line)


def _key_fields(*values: str | None) -> dict[str, object]:
    """The key fields given on the command line, in ``auth.KEY_FIELDS`` order."""
    from .auth import KEY_FIELDS

    return {k: v for k, v in zip(KEY_FIELDS, values, strict=True) if v is not None}


def _or_exit(fn: Any) -> Any:
    """Run ``fn``; a refused value or a conflict is one line on stderr and exit 2."""
    try:
        return fn()
    except BastionError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None


def _limit_lines(k: Any) -> list[str]:
    """A key's limits and metadata, one ``name: value`` line each (only those that are set)."""
    return [f"{name + ':':<8} {v}" for name, v in _limit_pairs(k)]


def _limit_pairs(k: Any) -> list[tuple[str, str]]:
    """A key's limits and metadata that are set, as (name, shown value)."""
    from .auth import iso_utc

    lim = k.limits
    shown = {
        "daily":   None if lim.daily_usd is None else f"${lim.daily_usd:g}",
        "monthly": None if lim.monthly_usd is None else f"${lim.monthly_usd:g}",
        "rpm":     None if lim.rpm is None else f"{lim.rpm:g}",
        "tpm":     None if lim.tpm is None else str(lim.tpm),
        "models":  ",".join(lim.models) or None,
        "expires": iso_utc(lim.expires_at),
        "team":    k.team,
        "owner":   k.owner,
    }  # fmt: skip
    return [(name, v) for name, v in shown.items() if v is not None]


@keys_app.command("list")
def keys_list(
    config: ConfigOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="include revoked")] = False,
) -> None:
    """List keys (never their secrets)."""
    cfg = _load(config, need_store=True)

    async def go(store: Any) -> Any:
        return await store.list_keys(include_revoked=all_)

    import time

    for k in _run(_with_store(cfg, go)):
        state = "revoked" if k.revoked_at else "active"
        if state == "active" and k.limits.expired(time.time()):
            state = "expired"
        limits = " ".join(
            f"{name}={v!r}" if " " in v else f"{name}={v}" for name, v in _limit_pairs(k)
        )
        typer.echo(
            f"{k.id}  {k.name:<20} {k.prefix}…  feature={k.feature or '-'} user={k.user or '-'} "
            f"roles={','.join(k.roles) or '-'} {state}" + (f"  {limits}" if limits else "")
        )


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="key id or name")], config: ConfigOpt = None
) -> None:
    """Revoke a key (takes effect within the key cache time on every replica)."""
    cfg = _load(config, need_store=True)

    async def go(store: Any) -> Any:
        return await store.revoke_key(key)

    if not _run(_with_store(cfg, go)):
        typer.echo(f"no active key {key!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key}")


@app.command()
def kill(
    action: Annotated[str, typer.Argument(help="on | off | status")],
    feature: Annotated[str | None, typer.Option(help="only this feature")] = None,
    key: Annotated[str | None, typer.Option(help="only this key id")] = None,
    who: Annotated[str | None, typer.Option(help="recorded as who flipped it")] = None,
    create: Annotated[
        bool, typer.Option("--create", help="write to a state file no gateway has made yet")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """The kill switch: every gateway on the same state serves the degraded response within a second.

    The state is found exactly as ``bastion serve`` finds it (--config / BASTION_CONFIG /
    BASTION__STATE__URL / ./bastion-state.db), and is printed first, so a switch flipped on
    another file than the gateway's cannot pass for a working one.
    """
    import getpass
    import socket
    import time

    from .reliability.killswitch import PREFIX, set_kill, switches_on, unconfigured_note
    from .state import open_state

    if action not in ("on", "off", "status"):
        typer.echo("action must be on, off or status", err=True)
        raise typer.Exit(2)
    cfg = _load(config)
    where, missing = _state_where(cfg.state.url, cfg.state.prefix)
    typer.echo(f"state: {where}")
    if where.startswith("memory"):
        typer.echo(
            "error: this state lives inside each process, so no running gateway can see this "
            "switch; use the admin API (POST /admin/kill) or a file or Redis state",
            err=True,
        )
        raise typer.Exit(2)
    if missing and not create:
        typer.echo(
            f"error: no state file at {missing}: no gateway has run on this state. Run this where "
            "the gateway runs, or pass its config (--config or BASTION_CONFIG); "
            "--create writes the file anyway",
            err=True,
        )
        raise typer.Exit(1)
    if feature and feature not in cfg.features and action != "status":
        typer.echo(f"note: {unconfigured_note(feature)}", err=True)

    async def go() -> list[str]:
        st = open_state(cfg.state.url, prefix=cfg.state.prefix)
        try:
            if action != "status":
                k = await set_kill(
                    st,
                    action == "on",
                    who=who or getpass.getuser(),
                    feature=feature,
                    key_id=key,
                    via=f"CLI on {socket.gethostname()}",
                )
                poll = cfg.reliability.kill_switch_poll_seconds
                return [f"{k.removeprefix(PREFIX)}: {action} (gateways obey within {poll:g} s)"]
            now = time.time()
            lines = [switch.describe(now) for switch, _ in await switches_on(st)]
            return lines or ["all switches off"]
        finally:
            await st.close()

    try:
        lines = _run(go())
    except BastionError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    for line in lines:
        typer.echo(line)


prompts_app = typer.Typer(no_args_is_help=True, help="The prompt registry: versions and labels.")
app.add_typer(prompts_app, name="prompts")


@prompts_app.command("publish")
def prompts_publish(
    name: Annotated[str, typer.Argument(help="template name")],
    file: Annotated[Path, typer.Option(help="the instructions text ({variables} allowed)")],
    label: Annotated[
        list[str] | None, typer.Option(help="labels to point at it (repeatable)")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Publish a new immutable version (the same text as the latest is not a new version)."""
    import getpass

    from .safety.setup import PromptService, canary_secret

    cfg = _load(config, need_store=True)
    text = file.read_text()

    async def go(store: Any) -> int:
        svc = PromptService(store, canary_secret(cfg))
        return await svc.publish(name, text, labels=tuple(label or ()), who=getpass.getuser())

    version = _run(_with_store(cfg, go))
    typer.echo(f"{name}@{version}" + (f" labels: {', '.join(label)}" if label else ""))


@prompts_app.command("label")
def prompts_label(
    name: Annotated[str, typer.Argument()],
    label: Annotated[str, typer.Argument()],
    version: Annotated[int, typer.Argument()],
    config: ConfigOpt = None,
) -> None:
    """Point a label (production, canary) at a version: roll forward or back without a deploy."""
    cfg = _load(config, need_store=True)

    async def go(store: Any) -> None:
        await store.set_prompt_label(name, label, version)

    _run(_with_store(cfg, go))
    typer.echo(f"{name}:{label} -> {version}")


@prompts_app.command("list")
def prompts_list(config: ConfigOpt = None) -> None:
    """Every prompt version."""
    cfg = _load(config, need_store=True)

    async def go(store: Any) -> Any:
        return await store.list_prompts()

    for p in _run(_with_store(cfg, go)):
        typer.echo(f"{p.name}@{p.version}  by {p.created_by or '-'}  {p.instructions[:60]!r}")


cache_app = typer.Typer(no_args_is_help=True, help="Prompt caching.")
app.add_typer(cache_app, name="cache")


@cache_app.command("warm")
def cache_warm(
    model: Annotated[str, typer.Option(help="the model alias to warm")],
    system_file: Annotated[Path, typer.Option(help="the stable prefix: a system prompt file")],
    feature: Annotated[str | None, typer.Option(help="the feature the prefix belongs to")] = None,
    config: ConfigOpt = None,
) -> None:
    """Pre-warm a long stable prefix so the first real call is not a cold cache (max_tokens=1)."""
    from .gateway import Gateway
    from .providers.base import Format

    cfg = _load(config)
    text = system_file.read_text()

    async def go() -> Any:
        async with Gateway(cfg) as gw:
            if "{model}" in model or "*" in model:
                raise typer.BadParameter("name a concrete model")
            ctx = {"feature": feature} if feature else {}
            primary = gw.router.resolve(model)[0]
            if primary.endpoint.speaks(Format.ANTHROPIC) is Format.ANTHROPIC:
                return await gw.messages(
                    {
                        "model": model,
                        "system": text,
                        "max_tokens": 1,
                        "messages": [{"role": "user", "content": "."}],
                    },
                    **ctx,
                )
            return await gw.chat_completions(
                {
                    "model": model,
                    "max_tokens": 1,
                    "messages": [
                        {"role": "system", "content": text},
                        {"role": "user", "content": "."},
                    ],
                },
                **ctx,
            )

    result = _run(go())
    typer.echo(f"warmed {model}: usage {result.get('usage')}")


@app.command()
def trace(
    trace_id: Annotated[str, typer.Argument(help="W3C trace id")], config: ConfigOpt = None
) -> None:
    """Every call of one trace: time, model, status, tokens, cost, latency, TTFT, attempts, flags."""
    from .observability.tracing import print_trace

    cfg = _load(config, need_store=True)

    async def go(store: Any) -> list[str]:
        return await print_trace(store, trace_id)

    for line in _run(_with_store(cfg, go)):
        typer.echo(line)


@app.command()
def retention(action: Annotated[str, typer.Argument(help="run")], config: ConfigOpt = None) -> None:
    """Age out call bodies and metadata now (the gateway also does it periodically)."""
    from .observability.retention import run_retention

    if action != "run":
        typer.echo("usage: bastion retention run", err=True)
        raise typer.Exit(2)
    cfg = _load(config, need_store=True)
    obs = cfg.observability

    async def go(store: Any) -> Any:
        return await run_retention(
            store, bodies_days=obs.bodies_retention_days, metadata_days=obs.metadata_retention_days
        )

    r = _run(_with_store(cfg, go))
    typer.echo(f"bodies cleared: {r.bodies_cleared}, calls deleted: {r.calls_deleted}")


@config_app.command("example")
def config_example() -> None:
    """Print a complete, commented example configuration."""
    typer.echo((Path(__file__).parent / "config_example.yaml").read_text(), nl=False)


@config_app.command("check")
def config_check(file: Annotated[Path, typer.Argument(help="the YAML file to validate")]) -> None:
    """Validate a configuration file; errors name the key and line."""
    cfg = _load(file)
    typer.echo(
        f"ok: {len(cfg.providers)} providers, {len(cfg.models)} models, {len(cfg.features)} features"
    )


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
