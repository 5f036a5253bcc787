"""Links: search the target system for a counterpart, see what linking it releases, link it.

The same steps as `mlconnector links search` and `links link`: the pair's declared
counterpart kind reads both records, `releases.would_release` and `engine.plan_records`
preview the held records the link frees, and `links.link` stores it (audited, releasing).
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from mlconnector.console.auth import actor, operator_only
from mlconnector.console.blueprint import blueprint
from mlconnector.console.forms import LinkForm, SearchTargetForm
from mlconnector.db.session import session_scope

SEARCH_LIMIT = 50  # target records a search shows; a longer list means the words are too few


def _kind(db: Any, integration: str, kind: str) -> tuple[Any, Any]:
    from mlconnector import engine

    ctx = engine.context_for(db, integration)
    return ctx, ctx.pair.counterpart(kind)


def release_preview(integration: str, kind: str, source_system: str, source_id: str, link_row: Any) -> tuple[list[int], list[Any]]:
    """The held records this link frees, and what each one's write would then do."""
    from mlconnector import engine, releases
    from mlconnector.holds import LinkNeeded

    with session_scope() as db:
        ids = releases.would_release(db, integration, [LinkNeeded(kind, source_system, source_id)])

    def with_the_link(preview: Any) -> None:
        preview.add(link_row)
        preview.flush()

    return ids, (engine.plan_records(ids, before=with_the_link) if ids else [])


@blueprint.get("/integrations/<integration>/links")
def links_page(integration: str) -> ResponseReturnValue:
    from mlconnector import engine, links

    with session_scope() as db:
        ctx = engine.context_for(db, integration)
        kinds = [c.kind for c in ctx.pair.counterparts]
        form = SearchTargetForm(request.args)
        form.kind.choices = [(k, k) for k in kinds]
        existing = [(l.kind, l.source_system, l.source_id, l.source_name, l.target_system, l.target_id, l.target_name, l.how,
                     l.created_at) for l in links.list_links(db, integration, form.kind.data or None)]
        found, source, declared = [], None, None
        kind = form.kind.data or (kinds[0] if kinds else "")
        if kind and (form.q.data or form.source_id.data):
            declared = ctx.pair.counterpart(kind)
            if form.source_id.data:
                source = declared.get_source(ctx, form.source_id.data)
                if source is None:
                    abort(404, f"{declared.source_system} has no {declared.label} {form.source_id.data}")
            if form.q.data:
                found = declared.search(ctx, form.q.data)[:SEARCH_LIMIT]
    return render_template("links.html", integration=integration, form=form, existing=existing, found=found,
                           source=source, declared=declared, link_form=LinkForm())


@blueprint.post("/integrations/<integration>/links")
@operator_only
def link(integration: str) -> ResponseReturnValue:
    from mlconnector import links
    from mlconnector.db.models import Link, utcnow
    from mlconnector.outbox import pending

    form = LinkForm()
    if not form.validate_on_submit():
        abort(400, "the link form was incomplete; search again and choose a record")
    kind, source_id, target_id = form.kind.data or "", form.source_id.data or "", form.target_id.data or ""
    with session_scope() as db:
        ctx, declared = _kind(db, integration, kind)
        try:
            source = declared.get_source(ctx, source_id)
            target = declared.get_target(ctx, target_id)
        except ValueError:
            abort(400, f"{source_id!r} or {target_id!r} is not an id of the form {declared.label} records have")
        if source is None or target is None:
            abort(404, f"{declared.source_system} {declared.label} {source_id} or {declared.target_system} "
                       f"{declared.label} {target_id} does not exist (any more); search again")
    if form.confirmed.data != "yes":
        row = Link(integration_id=integration, kind=kind, source_system=declared.source_system, source_id=source_id,
                   source_name=source.name, target_system=declared.target_system, target_id=target.id,
                   target_name=target.name, how=links.MANUAL, created_at=utcnow())
        ids, plan = release_preview(integration, kind, declared.source_system, source_id, row)
        form.confirmed.data = "yes"
        return render_template("link_confirm.html", integration=integration, form=form, declared=declared, source=source,
                               target=target, plan=list(zip(ids, plan)))
    with session_scope() as db:
        links.link(db, integration, kind=kind, source_system=declared.source_system, source_id=source_id,
                   source_name=source.name, target_system=declared.target_system, target_id=target.id,
                   target_name=target.name, how=links.MANUAL, actor=actor())
        released = pending(db).record_count
    flash(f"linked {declared.source_system} {declared.label} {source_id} '{source.name}' to {declared.target_system} "
          f"{target.label()}; re-queued {released} held record(s)", "ok")
    return redirect(url_for("console.links_page", integration=integration, kind=kind))
