"""Attack (issue #14): ``n`` on /v1/responses was ignored, so ``n: 2`` was answered with one
response (200), which the issue forbids ("never silently one choice"). The Responses API has
no ``n``; anything but 1 is now a 400 naming ``n`` before anything is sent, on every kind.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.conftest import RunningGateway

from bastion.errors import InvalidRequest
from bastion.responses.request import to_chat


@pytest.mark.parametrize("stream", [False, True])
def test_n_2_over_the_responses_api_is_a_400_naming_n(
    gateway_proc: RunningGateway, stream: bool
) -> None:
    oa = openai.OpenAI(base_url=gateway_proc.url + "/v1", api_key=gateway_proc.key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        oa.responses.create(model="gpt-4.1", input="hi", stream=stream, extra_body={"n": 2})
    assert err.value.param == "n"
    ok = oa.responses.create(model="gpt-4.1", input="hi", extra_body={"n": 1})
    assert ok.output_text


@given(
    st.one_of(
        st.integers().filter(lambda n: n != 1),
        st.floats(allow_nan=False),
        st.text(),
        st.booleans(),
        st.lists(st.integers(), max_size=2),
    )
)
def test_any_n_but_1_is_refused_naming_n(n: Any) -> None:
    with pytest.raises(InvalidRequest) as err:
        to_chat({"model": "m", "input": "hi", "n": n})
    assert err.value.param == "n"
    assert "n" not in to_chat({"model": "m", "input": "hi", "n": 1}).chat
