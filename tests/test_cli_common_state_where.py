"""The state and store a command names are shown without their password, whatever the URL.

``bastion kill`` prints the state it writes to before anything else, and a command that finds no
record store names the file it looked for: both go through ``cli_common.state_where``, so a
password in ``BASTION__STATE__URL`` must never reach a terminal or a CI log.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import assume, given
from hypothesis import strategies as st

from bastion import cli, cli_common

_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
# what a password may hold inside a URL's netloc (no '/', '?', '#': those end the netloc)
_SECRET = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@%",
    min_size=4,
    max_size=24,
)


@given(
    scheme=st.sampled_from(["redis", "rediss", "postgresql", "valkey"]),
    user=st.one_of(st.just(""), _NAME),
    password=_SECRET,
    host=_NAME,
    port=st.one_of(st.none(), st.integers(min_value=1, max_value=65535)),
    prefix=_NAME,
)
def test_a_password_in_any_state_url_is_never_shown(
    scheme: str, user: str, password: str, host: str, port: int | None, prefix: str
) -> None:
    assume(password not in f"{scheme}{user}{host}{port}{prefix} (key prefix '') ***")
    netloc = f"{user}:{password}@{host}" + ("" if port is None else f":{port}")
    shown, missing = cli_common.state_where(f"{scheme}://{netloc}/0", prefix)
    assert password not in shown
    assert shown == f"{scheme}://{user}:***@{netloc.rpartition('@')[2]}/0 (key prefix {prefix!r})"
    assert missing is None  # only a file can be missing


@given(name=_NAME, exists=st.booleans())
def test_a_sqlite_state_names_its_file_and_says_whether_it_is_missing(
    name: str, exists: bool
) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{name}.db"
        if exists:
            path.write_bytes(b"")
        shown, missing = cli_common.state_where(f"sqlite:///{path}", "p")
        assert shown == f"sqlite file {path.resolve()}"
        assert missing == (None if exists else path.resolve())


def test_the_cli_keeps_the_names_other_modules_import() -> None:
    # tests and older callers import these from bastion.cli: they are cli_common's, not copies
    assert cli._state_where is cli_common.state_where
    assert cli._load is cli_common.command_config
    assert cli._run is cli_common.run_coroutine
    assert cli._with_store is cli_common.with_store
