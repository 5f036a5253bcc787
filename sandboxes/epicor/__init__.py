"""A faithful simulator of the Epicor Kinetic REST API v2 (see shared/vendor-apis/epicor.md).

What a client can get wrong here, it gets wrong against Epicor too:

- Paths are `/{instance}/api/v2/odata/{company}/{Service}/{EntitySet|Method}`; an unknown
  instance, company, service, entity set or method answers 404 in Epicor's error shape.
- Every v2 call needs `x-api-key` (or `?api-key=`) AND an identity: Basic, or a bearer token
  from `POST /{instance}/TokenResource.svc/` (no refresh token; it simply expires).
- OData reads: `value` lists, `$filter` (eq ne gt ge lt le, and or not, parentheses,
  contains/startswith/endswith/tolower/toupper/substringof, `Nav/any(x: ...)`), `$select`,
  `$expand`, `$orderby`, `$top` (100 rows when absent, a setting; capped at 100), `$skip`, `$count`.
  String comparisons ignore case, as SQL Server's default collation does.
- A PO (`POes`) expands its lines (`PODetails`) and its releases, the delivery schedule
  (`PORels`: `RelQty`, `DueDate`, the `JobNum` a release is bought for).
- Business-object methods answer `{"returnObj": ..., "parameters": {...}}`; tableset names
  (`APInvHed`, `APInvDtl`, `CheckHed`, `APTran`) are distinct from entity sets
  (`APInvoices`, `APInvDtls`, `PaymentEntries`, `APTrans`). Each method's inputs and outputs
  are declared once (`methods.py`): every declared input must be sent (`confirmCheck` on
  `ChangeVendorID` too), a missing one answers 400 "Parameter X is not found in the input
  object", an undeclared one is ignored; the answer is built from the declared outputs.
  Classic reads (`GetByID`) answer GET.
- `UpdateMaster` answers its documented outputs (`ds, grpTotalInvAmt, requiresUserInput,
  opMessage, opMsgChkBankRef, opChkRevMsg, lEnableGenLegalNum, lUpdateRan, opDUAMsg`); a
  200 with `lUpdateRan` false saved nothing (`POST /_sandbox/epicor/update-master-holds`
  makes it answer so).
- AP invoices live inside an existing invoice group (`APInvGrps`); `GetNewAPInvHedInvoice`
  locks the group to the caller (`ActiveUserID`), a group locked by someone else refuses
  writes, `UnlockGroup` releases it. Lines need a saved header. `Update` checks the amount,
  the supplier, the group, GL accounts and duplicate keys (409 by default; whether Epicor
  answers 409 or a 400 BLException is unconfirmed, so it is a setting), honours `RowMod`
  and the row's `SysRevID` (optimistic concurrency).
- A lost answer (the server acted, the client never heard) is made on demand with
  `POST /_sandbox/epicor/lost-answers`.
- `SysRevID` is one database-wide counter bumped on every write (a SQL rowversion);
  `ChangeDate`/`ChangedBy` exist only on the tables that have them (APInvHed, POHeader).

Facts marked unconfirmed in the vendor notes are settings in `EpicorSandboxSettings`.

Layout: `store` (settings, the error shape, tables on the kit store, wire forms, the control
API), `seed` (the seeded company), `query` (OData reads), `rules` (business rules, OData writes
and the entity sets), `methods` (business-object methods, each declared on its handler), and
`sandbox`, which puts them together behind the HTTP surface.
"""

from sandboxes.epicor.sandbox import EpicorSandbox
from sandboxes.epicor.seed import COST_CENTERS, NATURAL_ACCOUNTS
from sandboxes.epicor.store import (EpicorError, EpicorSandboxSettings, LostAnswers, UpdateMasterHold, fmt_datetime,
                                   parse_datetime)

__all__ = ["COST_CENTERS", "NATURAL_ACCOUNTS", "EpicorError", "EpicorSandbox", "EpicorSandboxSettings", "LostAnswers",
           "UpdateMasterHold", "fmt_datetime", "parse_datetime"]
