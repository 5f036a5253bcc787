"""The reconciliation of one integration for one period, as a page and as the CSV download
the accountant's workbook takes (mlconnector/reconcile.py computes both)."""

from __future__ import annotations

import re

from flask import Response, abort, render_template, request
from flask.typing import ResponseReturnValue

from mlconnector.console.blueprint import blueprint

PERIOD = re.compile(r"^\d{4}-\d{2}$")


def _period() -> str:
    from mlconnector.db.models import utcnow

    period = request.args.get("period") or utcnow().strftime("%Y-%m")
    if not PERIOD.match(period):
        abort(400, f"period {period!r} is not a month: give it as YYYY-MM, e.g. {utcnow():%Y-%m}")
    return period


@blueprint.get("/reconcile/<integration>")
def reconcile_page(integration: str) -> ResponseReturnValue:
    from mlconnector.reconcile import reconcile

    period = _period()
    report = reconcile(integration, period)
    return render_template("reconcile.html", report=report, integration=integration, period=period)


@blueprint.get("/reconcile/<integration>/csv")
def reconcile_csv(integration: str) -> ResponseReturnValue:
    from mlconnector.reconcile import reconcile, to_csv

    period = _period()
    body = to_csv(reconcile(integration, period))
    return Response(body, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="reconcile-{integration}-{period}.csv"'})
