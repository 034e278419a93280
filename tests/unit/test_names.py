"""The rules for ids and names, in one module, and the public names kept for them."""

from __future__ import annotations

import pytest

import fluxo
from fluxo import _names, history, stores


def test_the_public_modules_keep_their_names_for_the_rules() -> None:
    assert stores.MAX_ID_LENGTH == _names.MAX_ID_LENGTH == 255
    assert history.name_problem is _names.name_problem
    assert history.check_name is _names.check_name
    assert history.name_rule is _names.name_rule
    assert history.CHAIN_SEPARATOR == _names.CHAIN_SEPARATOR == "~"
    assert history.SIGNAL_PREFIX == _names.SIGNAL_PREFIX == "fluxo:"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("a\x00b", "holds the control character U+0000 at index 1"),
        ("tab\there", "holds the control character U+0009 at index 3"),
        ("x\ud800", "holds a lone surrogate (U+D800) at index 1"),
    ],
)
def test_unstorable_characters_are_named_with_their_index(value: str, problem: str) -> None:
    assert _names.name_problem(value) == problem
    with pytest.raises(fluxo.DefinitionError, match="names and ids may not contain"):
        _names.check_name("the run id", value)


def test_fit_names_pass_unchanged() -> None:
    assert _names.name_problem("order-17 ✓") is None
    assert _names.check_run_id("order-17") == "order-17"
    assert _names.check_signal_name("approved") == "approved"
    assert _names.check_patch_id("send-sms") == "send-sms"
    assert _names.check_start_id("a" * 255) == "a" * 255
    assert _names.worker_id_problem("w-1") is None


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (_names.check_run_id, 17, "a run id is a string, not 17"),
        (_names.check_signal_name, "", "a signal name must be a non-empty string"),
        (_names.check_signal_name, "fluxo:child:x", "are Fluxo's own"),
        (_names.check_patch_id, None, "a patch id must be a non-empty string"),
        (_names.check_start_id, "a" * 256, "at most 255 characters"),
        (_names.check_start_id, "a~1", "may not contain '~'"),
        (_names.check_start_id, "a\x00", "control characters"),
    ],
)
def test_each_check_names_what_is_wrong(check: object, value: object, message: str) -> None:
    with pytest.raises(fluxo.DefinitionError, match=message):
        check(value)  # type: ignore[operator]


def test_a_worker_id_problem_is_told_not_raised() -> None:
    assert "non-empty string" in (_names.worker_id_problem("") or "")
    assert "worker_id 'w\\x00'" in (_names.worker_id_problem("w\x00") or "")


def test_an_id_fluxo_builds_that_no_store_holds_is_refused() -> None:
    _names.check_new_id_length("a" * 255, "the child run's id", "shorten it")
    with pytest.raises(fluxo.DefinitionError, match=r"would be longer than 255 characters; fix"):
        _names.check_new_id_length("a" * 256, "the child run's id", "fix")


def test_definition_names_report_every_problem_at_once() -> None:
    problems = _names.definition_name_problems("step 'f'", " ", "x" * 300, ["ok", "\x07"])
    assert len(problems) == 3
    assert "name= must be a non-empty string" in problems[0]
    assert "300 characters long" in problems[1]
    assert "an alias '\\x07'" in problems[2]
