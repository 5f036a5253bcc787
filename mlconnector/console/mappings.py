"""The config maps (GL accounts, business units, cost codes, subaccounts, items, ...) edited in
the browser, validated by the pair's config model, with the held records a change releases
previewed before it is saved: the same steps as `mlconnector integrations set-config`.

The maps are found in each pair's config model, not listed here: every dict-valued field,
at the top or one model down (`gl.by_business_unit`, `cost_codes.by_account`).
"""

from __future__ import annotations

import copy
import json
import typing
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from pydantic import BaseModel

from mlconnector.config import IntegrationConfig
from mlconnector.console.auth import actor, current_user
from mlconnector.console.blueprint import blueprint
from mlconnector.console.forms import MapsForm
from mlconnector.db.session import session_scope

PLATFORM_FIELDS = frozenset(IntegrationConfig.model_fields)  # systems, counterparts, polls: not business maps


class ConfigMap(BaseModel):
    path: str  # dotted, as hold releases name config keys
    description: str
    plain: bool  # text to text: edited as 'key = value' lines; otherwise as JSON


def config_maps(model: type[BaseModel], prefix: str = "") -> list[ConfigMap]:
    found: list[ConfigMap] = []
    for name, field in model.model_fields.items():
        if not prefix and name in PLATFORM_FIELDS:
            continue
        annotation = field.annotation
        if typing.get_origin(annotation) is dict:
            plain = typing.get_args(annotation) == (str, str)
            found.append(ConfigMap(path=prefix + name, description=field.description or "", plain=plain))
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel) and not prefix:
            found += config_maps(annotation, f"{name}.")
    return found


def _get(config: dict[str, Any], path: str) -> dict[str, Any]:
    node: Any = config
    for part in path.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def _set(config: dict[str, Any], path: str, value: dict[str, Any]) -> None:
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def shown(entry: ConfigMap, value: dict[str, Any]) -> str:
    if entry.plain:
        return "\n".join(f"{k} = {v}" for k, v in value.items())
    return json.dumps(value, indent=2)


def parsed(entry: ConfigMap, text: str) -> dict[str, Any]:
    """The map a textarea holds; ValueError naming the line that is not 'key = value'."""
    if not entry.plain:
        try:
            value = json.loads(text or "{}")
        except json.JSONDecodeError as error:
            raise ValueError(f"{entry.path}: not JSON ({error.msg} at line {error.lineno})") from None
        if not isinstance(value, dict):
            raise ValueError(f"{entry.path}: must be a JSON object")
        return value
    out: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{entry.path} line {number}: write 'source = target', e.g. '7 = 5100-100'")
        out[key.strip()] = value.strip()
    return out


@blueprint.route("/integrations/<integration>/maps", methods=["GET", "POST"])
def maps(integration: str) -> ResponseReturnValue:
    from mlconnector import engine, releases
    from mlconnector.config import ConfigError, validate_config
    from mlconnector.db.models import Integration
    from mlconnector.flows import get_pair
    from mlconnector.integrations import get_integration

    with session_scope() as db:
        row = get_integration(db, integration)
        pair = get_pair(row.pair)
        old = copy.deepcopy(dict(row.config or {}))
    entries = config_maps(pair.config_model)
    form = MapsForm()
    texts = {e.path: shown(e, _get(old, e.path)) for e in entries}
    if request.method == "GET":
        return render_template("maps.html", integration=integration, pair=pair.name, entries=entries, texts=texts, form=form)
    user = current_user()
    if user is None or not user.may_act:
        abort(403, "only an operator can change the maps")
    if not form.validate_on_submit():
        abort(400, "the form expired; open the maps again")
    new = copy.deepcopy(old)
    problems: list[str] = []
    for entry in entries:
        texts[entry.path] = request.form.get(f"map:{entry.path}", "")
        try:
            value = parsed(entry, texts[entry.path])
            if value != _get(old, entry.path):  # an untouched empty map is not written in as {}
                _set(new, entry.path, value)
        except ValueError as error:
            problems.append(str(error))
    if not problems:
        try:
            validate_config(pair, new)
        except ConfigError as error:
            problems = error.problems
    if problems:
        return render_template("maps.html", integration=integration, pair=pair.name, entries=entries, texts=texts,
                               form=form, problems=problems), 422
    if new == old:
        flash("nothing changed", "ok")
        return redirect(url_for("console.maps", integration=integration))
    if form.confirmed.data != "yes":
        with session_scope() as db:
            ids = releases.would_release(db, integration, releases.changed_config_keys(db, integration, old, new))

        def with_new_config(preview: Any) -> None:
            preview.get(Integration, integration).config = new

        plan = engine.plan_records(ids, before=with_new_config) if ids else []
        form.confirmed.data = "yes"
        return render_template("maps.html", integration=integration, pair=pair.name, entries=entries, texts=texts,
                               form=form, preview=list(zip(ids, plan)))
    from mlconnector import audit

    changed = sorted(e.path for e in entries if _get(old, e.path) != _get(new, e.path))
    with session_scope() as db:
        row = get_integration(db, integration)
        current = dict(row.config or {})
        row.config = new
        audit.append(db, "config_changed", f"maps changed in the console: {', '.join(changed)}",
                     integration_id=integration, actor=actor())
        released = releases.release_config_changes(db, integration, current, new)
    flash(f"maps of {integration} saved ({', '.join(changed)}); re-queued {released} held record(s)", "ok")
    return redirect(url_for("console.maps", integration=integration))
