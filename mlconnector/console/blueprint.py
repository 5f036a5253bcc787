"""The console blueprint, and its templates (the style is inline: nothing under /console is served without a session but sign-in)."""

from __future__ import annotations

from flask import Blueprint

blueprint = Blueprint("console", __name__, url_prefix="/console", template_folder="templates")
