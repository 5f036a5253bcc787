"""Sign-in, the overview, the exceptions queue and the record page with its actions."""

from __future__ import annotations

import json
from typing import Any

from flask import abort, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from mlconnector import audit
from mlconnector.console import errors, linking, mappings, planning, reconciling  # noqa: F401  (their pages register)
from mlconnector.console.auth import actor, current_user, guard, operator_only, safe_next
from mlconnector.console.blueprint import blueprint
from mlconnector.console.budgets import rate_budgets
from mlconnector.console.diff import field_changes
from mlconnector.console.forms import ActionForm, EditForm, ResolveForm, SignInForm
from mlconnector.console.queue import QueueFilter, page
from mlconnector.console.security import limiter
from mlconnector.db.session import session_scope

blueprint.before_request(guard)


@blueprint.context_processor
def _everywhere() -> dict[str, Any]:
    return {"user": current_user(), "signout_form": ActionForm()}


def _signin_limit() -> str:
    from mlconnector.settings import get_settings

    return get_settings().console_signin_limit


@blueprint.route("/signin", methods=["GET", "POST"])
@limiter.limit(_signin_limit, methods=["POST"])
def signin() -> ResponseReturnValue:
    from mlconnector.users import authenticate

    form = SignInForm(next=request.args.get("next", ""))
    if form.validate_on_submit():
        with session_scope() as db:
            user = authenticate(db, form.username.data or "", form.password.data or "")
            if user is None:
                audit.append(db, "console_signin_refused", f"sign-in refused for {form.username.data!r} from "
                             f"{request.remote_addr}", actor=(form.username.data or "")[:100])
            else:
                audit.append(db, "console_signin", f"{user.username} signed in from {request.remote_addr}",
                             actor=user.username)
                name = user.username
        if user is None:
            flash("That user name and password do not match an active user.", "error")
            return render_template("signin.html", form=form), 401
        session.clear()  # a new session at each sign-in: nothing carried over from before it
        session.permanent = True
        session["user"] = name
        return redirect(safe_next(form.next.data))
    return render_template("signin.html", form=form)


@blueprint.post("/signout")
def signout() -> ResponseReturnValue:
    if ActionForm().validate_on_submit():
        with session_scope() as db:
            audit.append(db, "console_signout", f"{actor()} signed out", actor=actor())
    session.clear()
    return redirect(url_for("console.signin"))


@blueprint.get("/")
def overview() -> ResponseReturnValue:
    from mlconnector.health import documents_created_this_month, flow_health
    from mlconnector.integrations import list_integrations

    with session_scope() as db:
        rows = flow_health(db)
        created = documents_created_this_month(db)
        integrations = [(i.id, i.pair, i.enabled, i.name) for i in list_integrations(db)]
        budgets = {i.id: rate_budgets(i.config or {}) for i in list_integrations(db)}
    return render_template("overview.html", rows=rows, created=created, integrations=integrations, budgets=budgets)


@blueprint.get("/exceptions")
def exceptions() -> ResponseReturnValue:
    from mlconnector.integrations import list_integrations

    try:
        wanted = QueueFilter.model_validate({k: v for k, v in request.args.items() if v != ""})
    except ValueError:
        abort(400, "a filter is not valid (age is a number of hours); clear the filters and try again")
    with session_scope() as db:
        found = page(db, wanted)
        integrations = [i.id for i in list_integrations(db)]
    return render_template("exceptions.html", page=found, wanted=wanted, integrations=integrations,
                           next_args={**wanted.model_dump(exclude_defaults=True), "after": found.next_cursor})


def _record_or_404(db: Any, record_id: int) -> Any:
    from mlconnector.db.models import SyncRecord

    record = db.get(SyncRecord, record_id)
    if record is None:
        abort(404, f"no record {record_id}; find records in the exceptions queue")
    return record


def _link_needs(db: Any, record_id: int) -> list[Any]:
    from mlconnector.db.models import HoldRelease
    from mlconnector.holds import LinkNeeded, parse_release

    keys = db.scalars(select(HoldRelease.release_key).where(HoldRelease.sync_record_id == record_id)).all()
    return [r for r in (parse_release(k) for k in keys) if isinstance(r, LinkNeeded)]


@blueprint.get("/records/<int:record_id>")
def record(record_id: int) -> ResponseReturnValue:
    from mlconnector.audit import trail

    with session_scope() as db:
        row = _record_or_404(db, record_id)
        steps = trail(db, record_id)
        shown = {c.name: getattr(row, c.name) for c in row.__table__.columns}
        needs = _link_needs(db, record_id) if row.status == "held" else []
        db.expunge_all()
    mapped = next((s.mapped_payload for s in reversed(steps) if s.mapped_payload), None)
    return render_template("record.html", record=shown, steps=steps, mapped=mapped, needs=needs,
                           payload=json.dumps(shown["edited_payload"] or shown["payload"] or {}, indent=2, default=str),
                           mapped_json=json.dumps(mapped, indent=2, default=str) if mapped else "",
                           resolve_form=ResolveForm(), action_form=ActionForm())


@blueprint.route("/records/<int:record_id>/replay", methods=["GET", "POST"])
@operator_only
def replay(record_id: int) -> ResponseReturnValue:
    """A preview of what the replay would write, then (confirmed) the replay itself."""
    from mlconnector import engine

    form = ActionForm()
    if request.method == "POST" and form.validate_on_submit():
        _replay(record_id, None, "")
        flash(f"record {record_id} replayed", "ok")
        return redirect(url_for("console.record", record_id=record_id))
    with session_scope() as db:
        _record_or_404(db, record_id)
    plan = engine.plan_records([record_id])
    return render_template("replay.html", record_id=record_id, plan=plan, form=form)


def _replay(record_id: int, edited: dict[str, Any] | None, note: str) -> None:
    from mlconnector import engine
    from mlconnector.db.models import SyncRecord
    from mlconnector.tasks import send

    work = engine.Enqueue()
    with session_scope() as db:
        row = db.scalar(select(SyncRecord).where(SyncRecord.id == record_id).with_for_update())
        if row is None:
            abort(404, f"no record {record_id}")
        work.extend(engine.replay(db, row, edited_payload=edited, actor=actor(), note=note))
    send(work)


@blueprint.route("/records/<int:record_id>/edit", methods=["GET", "POST"])
@operator_only
def edit(record_id: int) -> ResponseReturnValue:
    """Edit the source payload, see each changed field, confirm: the record replays with the edit."""
    with session_scope() as db:
        row = _record_or_404(db, record_id)
        original = dict(row.edited_payload or row.payload or {})
    form = EditForm()
    if request.method == "GET":
        form.payload.data = json.dumps(original, indent=2, default=str)
        return render_template("edit.html", record_id=record_id, form=form, changes=None)
    if not form.validate_on_submit():
        abort(400, "the form was incomplete or expired; open the record again")
    try:
        edited = json.loads(form.payload.data or "")
    except json.JSONDecodeError as error:
        flash(f"the payload is not JSON: {error.msg} at line {error.lineno} column {error.colno}", "error")
        return render_template("edit.html", record_id=record_id, form=form, changes=None), 422
    if not isinstance(edited, dict):
        flash("the payload must stay a JSON object", "error")
        return render_template("edit.html", record_id=record_id, form=form, changes=None), 422
    changes = field_changes(original, edited)
    if not changes:
        flash("the edit changes nothing; nothing replayed", "error")
        return render_template("edit.html", record_id=record_id, form=form, changes=None), 422
    if form.confirmed.data != "yes":
        form.confirmed.data = "yes"
        return render_template("edit.html", record_id=record_id, form=form, changes=changes)
    _replay(record_id, edited, form.note.data or "")
    flash(f"record {record_id} replayed with {len(changes)} changed field(s)", "ok")
    return redirect(url_for("console.record", record_id=record_id))


@blueprint.post("/records/<int:record_id>/resolve")
@operator_only
def resolve(record_id: int) -> ResponseReturnValue:
    from mlconnector.records import resolve as resolve_records

    form = ResolveForm()
    if not form.validate_on_submit():
        abort(400, "say how the record was handled (the note is required), then resolve again")
    with session_scope() as db:
        resolve_records(db, [record_id], note=form.note.data or "", actor=actor())
    flash(f"record {record_id} resolved", "ok")
    return redirect(url_for("console.record", record_id=record_id))
