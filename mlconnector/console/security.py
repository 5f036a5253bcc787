"""The console's protections, made once and bound to the app in init_console."""

from __future__ import annotations

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()
# No default limit: only sign-in is limited (the webhook receiver has its own protections).
limiter = Limiter(key_func=get_remote_address, default_limits=[])
