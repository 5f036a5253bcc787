"""The console's forms. Each is a Flask-WTF form, so each carries and checks a CSRF token."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, IntegerField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, Optional


class SignInForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=100)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1000)])
    next = HiddenField()


class ActionForm(FlaskForm):
    """A button that acts (sign out, replay after its preview): the token is all it carries."""


class ResolveForm(FlaskForm):
    note = TextAreaField("How was it handled outside the product?", validators=[DataRequired(), Length(max=2000)])


class EditForm(FlaskForm):
    payload = TextAreaField("Source payload (JSON)", validators=[DataRequired()])
    note = StringField("Why (kept in the audit trail)", validators=[Optional(), Length(max=500)])
    confirmed = HiddenField(default="")


class SearchTargetForm(FlaskForm):
    class Meta:
        csrf = False  # a GET search reads only; it carries no token

    kind = SelectField("Kind", choices=[])
    source_id = StringField("Source id", validators=[Optional(), Length(max=100)])
    q = StringField("Name or code", validators=[Optional(), Length(max=200)])


class LinkForm(FlaskForm):
    kind = HiddenField(validators=[DataRequired()])
    source_id = HiddenField(validators=[DataRequired()])
    target_id = HiddenField(validators=[DataRequired()])
    confirmed = HiddenField(default="")


class MapsForm(FlaskForm):
    """The map fields are added per pair by the view (one textarea per map)."""

    confirmed = HiddenField(default="")


class DryRunForm(FlaskForm):
    flow = SelectField("Flow", choices=[])
    limit = IntegerField("At most this many records per flow", default=50, validators=[NumberRange(1, 500)])
    full = BooleanField("Read everything, not only what changed since the last poll")
