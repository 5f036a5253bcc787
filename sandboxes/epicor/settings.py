"""What a deployment decides (settings) and what a test makes happen (holds, lost answers)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class EpicorSandboxSettings(BaseModel):
    """Per-deployment facts; the defaults follow the vendor notes (unconfirmed ones say so)."""

    company: str = "EPIC06"
    instance: str = "KineticLive"
    token_ttl: int = 3600  # unconfirmed: "about 1 hour", admin-configurable
    page_size: int = Field(100, ge=1)  # rows of an OData page when $top is absent [C1]
    max_top: int = Field(100, ge=1)  # unconfirmed whether a larger $top is honoured: capped here
    token_requires_api_key: bool = False  # unconfirmed whether TokenResource wants the key
    missing_api_key_status: int = 401  # unconfirmed: "v2 returns 401 even with a valid user"
    vendor_id_max_length: int = 8  # unconfirmed: Vendor.VendorID is x(8)
    payments_require_posted: bool = True  # unconfirmed: AP Payment Entry pays posted invoices only
    # unconfirmed: no public trace shows Epicor answering 409; 400 is its business-rule refusal
    duplicate_status: int = Field(409, ge=400, le=499)
    username: str = "mlconnector"
    password: str = "Kinetic-Sandbox-Pass-1"
    other_users: dict[str, str] = Field(default_factory=lambda: {"jsmith": "jsmith-pass-2"})


class UpdateMasterHold(BaseModel):
    """`POST /_sandbox/epicor/update-master-holds`: the next `count` UpdateMaster calls (on
    `invoice_num` only, when given) answer 200 without saving, as Epicor does when a check
    stops for a person."""

    count: int = Field(1, ge=0)
    invoice_num: str = ""  # "" holds any invoice
    requires_user_input: bool = True
    update_ran: bool = False
    op_message: str = "The invoice total does not match the total of its lines. Continue?"


class LostAnswers(BaseModel):
    """`POST /_sandbox/epicor/lost-answers`: after `skip` matching calls, the next `count`
    calls whose path contains `path_contains` are carried out, then answered `status` after
    `delay_seconds`, as when a gateway gives up on a server that already acted."""

    count: int = Field(1, ge=0)
    skip: int = Field(0, ge=0)
    path_contains: str = "UpdateMaster"
    status: int = Field(504, ge=500, le=599)
    delay_seconds: float = Field(0.0, ge=0, le=60)

