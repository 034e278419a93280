"""fluxo.contrib.django's admin: the runs list, a run's page, and actions behind permissions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client, override_settings

import fluxo
from fluxo.contrib.django import close_engine, get_engine
from tests.integration._django import Site

pytestmark = pytest.mark.usefixtures("django_site")

NOTES = "tests.integration.django_site.notes.workflows"
RUNS = "/admin/fluxo/run/"


def workflow(name: str) -> Any:
    from django.utils.module_loading import import_string

    return import_string(f"{NOTES}.{name}")


def user(*permissions: str) -> Any:
    """A staff user with these ``fluxo`` permissions (codenames)."""
    from django.contrib.auth.models import Permission, User

    made = User.objects.create_user(f"staff-{uuid.uuid4().hex[:12]}", is_staff=True)
    made.user_permissions.set(
        Permission.objects.filter(content_type__app_label="fluxo", codename__in=permissions)
    )
    return made


def client_for(*permissions: str) -> Client:
    client = Client()
    client.force_login(user(*permissions))
    return client


@pytest.fixture(autouse=True)
def fresh_engine() -> Iterator[None]:
    close_engine()
    yield
    close_engine()


@pytest.fixture
def runs() -> dict[str, str]:
    """A completed, a waiting (pending) and a failed run, by their status."""
    engine = get_engine()
    tag = uuid.uuid4().hex[:8]
    completed = f"done-{tag}"
    engine.run(workflow("note").options(id=completed), f"admin {tag}")
    waiting = engine.start(workflow("wait_for_go").options(id=f"wait-{tag}")).id
    failed = f"failed-{tag}"
    with pytest.raises(fluxo.WorkflowFailedError):
        engine.run(workflow("fails").options(id=failed))
    return {"completed": completed, "pending": waiting, "failed": failed}


# -- reading -------------------------------------------------------------------------------


def test_the_permissions_are_fluxos_own() -> None:
    from django.contrib.auth.models import Permission

    codenames = set(
        Permission.objects.filter(content_type__app_label="fluxo").values_list(
            "codename", flat=True
        )
    )
    assert codenames == {"view_run", "cancel_run", "retry_run", "signal_run"}


def test_the_changelist_lists_runs_with_filters_and_search(runs: dict[str, str]) -> None:
    client = client_for("view_run")

    page = client.get(RUNS)
    assert page.status_code == 200
    text = page.content.decode()
    assert all(run_id in text for run_id in runs.values())
    assert "By status" in text
    assert "By workflow" in text

    failed = client.get(RUNS, {"status": "failed"}).content.decode()
    assert runs["failed"] in failed
    assert runs["completed"] not in failed

    waiting = client.get(RUNS, {"workflow": f"{NOTES}.wait_for_go"}).content.decode()
    assert runs["pending"] in waiting
    assert runs["failed"] not in waiting

    found = client.get(RUNS, {"q": runs["completed"][:10]}).content.decode()
    assert runs["completed"] in found
    assert runs["failed"] not in found


def test_a_runs_page_shows_its_timeline_and_history(runs: dict[str, str]) -> None:
    client = client_for("view_run")

    page = client.get(f"{RUNS}{runs['completed']}/change/")

    assert page.status_code == 200
    text = page.content.decode()
    assert "Timeline" in text
    assert "status    completed" in text  # as `manage.py fluxo runs show` shows it
    assert "workflow_completed" in text
    assert f"{NOTES}.write_note" in text
    assert "&quot;admin " in text  # the input, decoded
    assert "Cancel this run" not in text  # finished, and no permission anyway


def test_a_skipped_signals_payload_is_shown_decoded() -> None:
    engine = get_engine()
    run_id = engine.start(workflow("wait_for_go").options(id=f"skip-{uuid.uuid4().hex[:8]}")).id
    engine.worker().process_one()
    engine.signal(run_id, "go", {"not": "a string"})
    engine.worker().process_one()

    text = client_for("view_run").get(f"{RUNS}{run_id}/change/").content.decode()

    row = next(line for line in text.splitlines() if "<td>signal_rejected</td>" in line)
    assert "&quot;payload&quot;: {&quot;not&quot;: &quot;a string&quot;}" in row  # not base64


def test_a_failed_runs_page_shows_its_error(runs: dict[str, str]) -> None:
    text = client_for("view_run").get(f"{RUNS}{runs['failed']}/change/").content.decode()
    assert "RuntimeError: boom" in text


def test_an_unknown_run_is_404() -> None:
    assert client_for("view_run").get(f"{RUNS}no-such-run/change/").status_code == 404


def test_without_the_view_permission_nothing_is_shown(runs: dict[str, str]) -> None:
    client = client_for()
    assert client.get(RUNS).status_code == 403
    assert client.get(f"{RUNS}{runs['completed']}/change/").status_code == 403


def test_nothing_is_added_changed_or_deleted_through_the_admin(runs: dict[str, str]) -> None:
    client = client_for("view_run", "cancel_run", "retry_run", "signal_run")
    assert client.get(f"{RUNS}add/").status_code == 403
    assert client.post(f"{RUNS}{runs['completed']}/delete/").status_code == 403
    assert "delete_selected" not in client.get(RUNS).content.decode()


def test_the_runs_of_another_django_database_are_listed(django_site: Site) -> None:
    django_site.require_postgres()
    with override_settings(FLUXO={"DATABASE": "pg"}):
        run_id = f"pg-{uuid.uuid4().hex}"
        get_engine().start(workflow("wait_for_go").options(id=run_id))
        client = client_for("view_run")
        assert run_id in client.get(RUNS).content.decode()
        assert client.get(f"{RUNS}{run_id}/change/").status_code == 200


def test_with_another_store_the_list_says_where_the_runs_are() -> None:
    with override_settings(FLUXO={"STORE": "memory://"}):
        run_id = get_engine().start(workflow("wait_for_go")).id
        client = client_for("view_run")
        listed = client.get(RUNS).content.decode()
        assert "manage.py fluxo runs list" in listed
        assert run_id not in listed
        assert client.get(f"{RUNS}{run_id}/change/").status_code == 200  # read from the store


# -- acting --------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["cancel", "retry", "signal"])
def test_an_action_without_its_permission_is_refused(action: str, runs: dict[str, str]) -> None:
    others = {"cancel", "retry", "signal"} - {action}
    client = client_for("view_run", *(f"{name}_run" for name in others))
    target = runs["failed"] if action == "retry" else runs["pending"]
    before = get_engine().get_run(target)

    refused = client.post(f"{RUNS}{target}/{action}/", {"name": "go", "payload": '"x"'})

    assert refused.status_code == 403
    after = get_engine().get_run(target)
    assert (after.status, after.updated_at) == (before.status, before.updated_at)
    assert get_engine().store.load(target).signals == ()


def test_the_actions_are_post_only(runs: dict[str, str]) -> None:
    client = client_for("view_run", "cancel_run")
    assert client.get(f"{RUNS}{runs['pending']}/cancel/").status_code == 405
    assert get_engine().get_run(runs["pending"]).status is fluxo.RunStatus.PENDING


def test_cancel_with_its_permission(runs: dict[str, str]) -> None:
    client = client_for("view_run", "cancel_run")
    page = client.get(f"{RUNS}{runs['pending']}/change/").content.decode()
    assert "Cancel this run" in page
    assert "Send" not in page  # no signal_run

    done = client.post(f"{RUNS}{runs['pending']}/cancel/", follow=True)

    assert done.status_code == 200
    assert f"Run {runs['pending']} is cancelled." in done.content.decode()
    assert get_engine().get_run(runs["pending"]).status is fluxo.RunStatus.CANCELLED


def test_retry_with_its_permission(runs: dict[str, str]) -> None:
    client = client_for("view_run", "retry_run")

    done = client.post(f"{RUNS}{runs['failed']}/retry/", follow=True)

    assert "is pending again" in done.content.decode()
    assert get_engine().get_run(runs["failed"]).status is fluxo.RunStatus.PENDING


def test_retrying_a_run_that_did_not_fail_says_why(runs: dict[str, str]) -> None:
    client = client_for("view_run", "retry_run")
    done = client.post(f"{RUNS}{runs['completed']}/retry/", follow=True)
    assert done.status_code == 200
    message = "is completed, not failed or dead; only a failed or dead run can be retried"
    assert message in done.content.decode()
    assert get_engine().get_run(runs["completed"]).status is fluxo.RunStatus.COMPLETED


def test_signal_with_its_permission_delivers_the_payload(runs: dict[str, str]) -> None:
    client = client_for("view_run", "signal_run")

    done = client.post(
        f"{RUNS}{runs['pending']}/signal/", {"name": "go", "payload": '"now"'}, follow=True
    )

    assert f"Signal &#x27;go&#x27; sent to run {runs['pending']}" in done.content.decode()
    with get_engine().worker():
        assert get_engine().handle(runs["pending"]).result(timeout=30) == "now"


def test_a_signal_payload_that_is_not_json_is_refused_with_advice(runs: dict[str, str]) -> None:
    client = client_for("view_run", "signal_run")
    done = client.post(
        f"{RUNS}{runs['pending']}/signal/", {"name": "go", "payload": "now"}, follow=True
    )
    assert "The signal was not sent: its payload is not valid JSON" in done.content.decode()
    assert get_engine().store.load(runs["pending"]).signals == ()


def test_the_changelist_actions_need_their_permissions(runs: dict[str, str]) -> None:
    viewer = client_for("view_run")
    assert "cancel_runs" not in viewer.get(RUNS).content.decode()
    viewer.post(RUNS, {"action": "cancel_runs", "_selected_action": [runs["pending"]]})
    assert get_engine().get_run(runs["pending"]).status is fluxo.RunStatus.PENDING

    operator = client_for("view_run", "cancel_run", "retry_run")
    listed = operator.get(RUNS).content.decode()
    assert "cancel_runs" in listed
    assert "retry_runs" in listed
    done = operator.post(
        RUNS, {"action": "cancel_runs", "_selected_action": [runs["pending"]]}, follow=True
    )
    assert "1 run cancelled." in done.content.decode()
    assert get_engine().get_run(runs["pending"]).status is fluxo.RunStatus.CANCELLED


def test_the_actions_are_recorded_in_djangos_admin_log(runs: dict[str, str]) -> None:
    from django.contrib.admin.models import LogEntry

    client = client_for("view_run", "cancel_run", "signal_run")
    client.post(f"{RUNS}{runs['pending']}/signal/", {"name": "later", "payload": "1"})
    client.post(f"{RUNS}{runs['pending']}/cancel/")

    logged = LogEntry.objects.filter(object_id=runs["pending"]).order_by("pk")
    assert [entry.get_change_message() for entry in logged] == [
        f"Signal 'later' sent to run {runs['pending']}.",
        f"Run {runs['pending']} is cancelled.",
    ]
