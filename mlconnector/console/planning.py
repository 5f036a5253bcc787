"""The dry run: what a sync would do, record by record, before running it (`sync --dry-run`).

It reads the source and target systems and writes nothing, so viewers may run it too; the
form is a POST only so a link or a crawler cannot start the vendor reads.
"""

from __future__ import annotations

from collections import Counter

from flask import abort, render_template, request
from flask.typing import ResponseReturnValue

from mlconnector.console.blueprint import blueprint
from mlconnector.console.forms import DryRunForm
from mlconnector.db.session import session_scope


@blueprint.route("/integrations/<integration>/dry-run", methods=["GET", "POST"])
def dry_run(integration: str) -> ResponseReturnValue:
    from mlconnector import engine
    from mlconnector.flows import get_pair
    from mlconnector.integrations import get_integration

    with session_scope() as db:
        pair = get_pair(get_integration(db, integration).pair)
    form = DryRunForm()
    form.flow.choices = [("", "every flow, prerequisites first")] + [(f.name, f.name) for f in pair.ordered_flows()]
    plans: list[tuple[str, list[engine.PlanLine]]] = []
    if request.method == "POST":
        if not form.validate_on_submit():
            abort(400, "the dry-run form was not valid; choose a flow and a limit from 1 to 500")
        flows = [form.flow.data] if form.flow.data else [f.name for f in pair.ordered_flows()]
        plans = [(flow, engine.plan_flow(integration, flow, full=bool(form.full.data), limit=form.limit.data)) for flow in flows]
    totals = Counter(line.action for _, lines in plans for line in lines)
    return render_template("dry_run.html", integration=integration, form=form, plans=plans, totals=sorted(totals.items()))
