"""The admin for runs: read-only lists and run pages, and actions that go through the engine.

The changelist (``/admin/fluxo/run/``) lists runs newest first, filtered by status
and workflow, searched by id (exactly, or by its beginning). A run's page shows
what ``manage.py fluxo runs show`` shows (its input, outcome and timeline) and its
history, each payload decoded. Nothing is added, changed or deleted through the
admin: its actions call the engine, each guarded by a permission of its own, and
refused (403) without it:

* ``fluxo.view_run``: see runs;
* ``fluxo.cancel_run``: cancel a run;
* ``fluxo.retry_run``: retry a failed run;
* ``fluxo.signal_run``: send a signal to a run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from fluxo import _cli_format, _errors, _history_file, history
from fluxo.codec import Codec
from fluxo.contrib.django import _process, models

PERMISSIONS = {
    "cancel": "fluxo.cancel_run",
    "retry": "fluxo.retry_run",
    "signal": "fluxo.signal_run",
}
"""The permission each action needs."""


class StatusFilter(admin.SimpleListFilter):
    """Filter by a run's status: every status Fluxo knows, in their order."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        """The statuses, from ``fluxo.RunStatus``."""
        return [(status.value, status.value) for status in history.RunStatus]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        """The runs with the chosen status."""
        value = self.value()
        return queryset if value is None else queryset.filter(status=value)


def _when(seconds: float | None) -> str:
    return "-" if seconds is None else _cli_format.iso_short(_cli_format.iso(seconds))


@admin.register(models.Run)
class RunAdmin(admin.ModelAdmin):
    """Runs, read-only; cancel, retry and signal through the engine."""

    list_display = ("id", "workflow", "status", "created", "updated")
    list_filter = (StatusFilter, "workflow")
    search_fields = ("id",)
    search_help_text = "A run id, or its beginning."
    ordering = ("-created_at",)
    list_per_page = 50
    show_full_result_count = False
    actions = ("cancel_runs", "retry_runs")
    run_template = "admin/fluxo/run/run.html"

    # -- read-only --------------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Runs are started by the engine, never added here."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Runs change through the engine only."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Runs leave the store through ``engine.purge`` only."""
        return False

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        """Whether the user may cancel runs (``fluxo.cancel_run``)."""
        return bool(request.user.has_perm(PERMISSIONS["cancel"]))

    def has_retry_permission(self, request: HttpRequest) -> bool:
        """Whether the user may retry runs (``fluxo.retry_run``)."""
        return bool(request.user.has_perm(PERMISSIONS["retry"]))

    def has_signal_permission(self, request: HttpRequest) -> bool:
        """Whether the user may signal runs (``fluxo.signal_run``)."""
        return bool(request.user.has_perm(PERMISSIONS["signal"]))

    @admin.display(description="created", ordering="created_at")
    def created(self, run: models.Run) -> str:
        """When the run was started (UTC)."""
        return _when(run.created_at)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, run: models.Run) -> str:
        """When the run last changed (UTC)."""
        return _when(run.updated_at)

    def get_search_results(
        self, request: HttpRequest, queryset: Any, search_term: str
    ) -> tuple[Any, bool]:
        """Runs whose id is the term or starts with it (ids are case-sensitive)."""
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(Q(id=term) | Q(id__startswith=term)), False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        """The list; says where the runs are when they are not in a Django database."""
        config = _process.current_settings()
        if config.store is not None and request.method == "GET":
            messages.info(
                request,
                "The runs are in the store FLUXO['STORE'] names, not in a Django database, "
                "so this list is empty; list them with `manage.py fluxo runs list`, and open "
                "a run's page at /admin/fluxo/run/<id>/change/.",
            )
        response: HttpResponse = super().changelist_view(request, extra_context)
        return response

    # -- the run page -----------------------------------------------------------------

    def get_urls(self) -> list[Any]:
        """The model's URLs, and one per action of the run page (POST only)."""
        wrap = self.admin_site.admin_view
        info = self.opts.app_label, self.opts.model_name
        actions = [
            path(
                f"<path:object_id>/{name}/",
                wrap(require_POST(view)),
                name="{}_{}_".format(*info) + name,
            )
            for name, view in (
                ("cancel", self.cancel_view),
                ("retry", self.retry_view),
                ("signal", self.signal_view),
            )
        ]
        urls: list[Any] = super().get_urls()
        return actions + urls

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: Any = None,
    ) -> HttpResponse:
        """The run's page: its summary, timeline and history, with its actions."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        run_id = unquote(object_id)
        engine = _process.get_engine()
        try:
            state = engine.store.load(run_id)
        except _errors.RunNotFoundError:
            raise Http404(f"no run {run_id!r}") from None
        except _errors.HistoryCorruptError as exc:
            messages.error(request, f"The history of run {run_id!r} is damaged: {exc}")
            return HttpResponseRedirect(reverse("admin:fluxo_run_changelist"))
        doc = _cli_format.describe_run(state, engine.codec)
        document = _history_file.to_document(state, readable_with=engine.codec)
        status = state.run.status
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Run {run_id}",
            "subtitle": state.run.workflow,
            "run": doc,
            "run_id": run_id,
            "quoted_id": quote(run_id),
            "quoted_parent": quote(state.run.parent) if state.run.parent else None,
            "timeline": _cli_format.render_run(doc),
            "events": [
                _event_row(entry, event, engine.codec)
                for entry, event in zip(document["events"], state.events, strict=True)
            ],
            "document": json.dumps(document, indent=2, ensure_ascii=False, default=str),
            "can_cancel": not status.is_terminal and self.has_cancel_permission(request),
            "can_retry": status in history.RETRYABLE_STATUSES
            and self.has_retry_permission(request),
            "can_signal": not status.is_terminal and self.has_signal_permission(request),
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.run_template, context)

    def _act(
        self,
        request: HttpRequest,
        object_id: str,
        permission: str,
        action: Callable[[str], str],
    ) -> HttpResponse:
        if not request.user.has_perm(PERMISSIONS[permission]):
            raise PermissionDenied
        run_id = unquote(object_id)
        try:
            done = action(run_id)
            self._audit(request, run_id, done)
            messages.success(request, done)
        except _errors.RunNotFoundError:
            raise Http404(f"no run {run_id!r}") from None
        except (_errors.FluxoError, ValueError) as exc:
            messages.error(request, str(exc))
        return HttpResponseRedirect(reverse("admin:fluxo_run_change", args=[quote(run_id)]))

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST: ask the run to stop (``fluxo.cancel_run``)."""

        def cancel(run_id: str) -> str:
            run = _process.get_engine().cancel(run_id)
            if run.status is history.RunStatus.CANCELLED:
                return f"Run {run_id} is cancelled."
            return f"Run {run_id} will stop at its next durable call."

        return self._act(request, object_id, "cancel", cancel)

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST: resume the failed run from its history (``fluxo.retry_run``)."""

        def retry(run_id: str) -> str:
            _process.get_engine().retry(run_id)
            return f"Run {run_id} is pending again; a worker resumes it from its history."

        return self._act(request, object_id, "retry", retry)

    def signal_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST ``name`` and a JSON ``payload``: signal the run (``fluxo.signal_run``)."""

        def signal(run_id: str) -> str:
            name = str(request.POST.get("name", "")).strip()
            if not name:
                raise ValueError("The signal was not sent: give it a name.")
            try:
                payload = _cli_format.parse_payload(request.POST.get("payload") or None)
            except ValueError as exc:
                raise ValueError(f"The signal was not sent: its payload is {exc}") from None
            _process.get_engine().signal(run_id, name, payload)
            return f"Signal {name!r} sent to run {run_id}."

        return self._act(request, object_id, "signal", signal)

    def _audit(self, request: HttpRequest, run_id: str, message: str) -> None:
        """Record what an operator did in Django's admin log (the run's "History")."""
        self.log_change(request, models.Run(id=run_id, workflow="run"), message)

    # -- the changelist's actions -----------------------------------------------------

    @admin.action(description="Cancel the selected runs", permissions=["cancel"])
    def cancel_runs(self, request: HttpRequest, queryset: Any) -> None:
        """Cancel every selected run that has not finished."""
        self._each(request, queryset, "cancelled", _process.get_engine().cancel)

    @admin.action(description="Retry the selected failed or dead runs", permissions=["retry"])
    def retry_runs(self, request: HttpRequest, queryset: Any) -> None:
        """Retry every selected run that failed or is dead."""
        self._each(request, queryset, "retried", _process.get_engine().retry)

    def _each(
        self, request: HttpRequest, queryset: Any, done: str, action: Callable[[str], Any]
    ) -> None:
        count = 0
        for run_id in queryset.values_list("id", flat=True):
            try:
                action(run_id)
                count += 1
            except _errors.FluxoError as exc:
                messages.warning(request, f"Run {run_id}: {exc}")
            else:
                self._audit(request, run_id, f"Run {run_id} {done}.")
        messages.success(request, f"{count} run{'' if count == 1 else 's'} {done}.")


def _event_row(entry: dict[str, Any], event: history.Event, codec: Codec) -> dict[str, Any]:
    """An event of the history document, for the run page's table.

    A skipped signal's event holds the payload as Fluxo recorded it: shown decoded,
    as every other payload, beside the reason it was skipped.
    """
    if _history_file.rejection(event) is not None:
        value = _cli_format.event_value(codec, event)
    else:
        value = entry.get("value", entry.get("data", entry.get("data_base64")))
    shown = "" if value is None else json.dumps(value, ensure_ascii=False, default=str)
    at = entry.get("recorded_at")
    return {
        "seq": entry["seq"],
        "kind": entry["kind"],
        "name": entry["name"],
        "value": shown,
        "recorded_at": "" if at is None else _cli_format.iso(at, precise=True),
    }
