"""A faithful simulator of SYSPRO e.net Solutions REST (the WCF host) and the read-only OData.

What it reproduces, from the vendor notes (`vendor-apis/syspro.md`):

- Every call is a `GET` under `/SYSPROWCFService/Rest` with case-insensitive paths and its
  parameters in the query string (XML documents URL-encoded). Answers are HTTP 200 with
  `Content-Type: application/octet-stream`, even for business errors.
- `Logon` answers a 34-hex-character UserId plus two spaces; every later call passes it as
  `UserId`. Sessions hold a licence seat until `Logoff` (answer `0`) or idle expiry. Session
  and logon failures are plain text starting `ERROR:`. `GetVersion` answers without a session;
  `GetLogonProfile` carries CompanyName, OperatorCode, OperatorGroup and AccountingDate.
- Business objects: COMFND (generic table query) and INVQRY on `Query/Query`; APSTIN (AP
  invoices), PORTOI (purchase orders) and INVTMA (inventory adjustments) on `Transaction/Post`;
  APSSSP (supplier maintenance) on `Setup/Add|Update|Delete`. Output XML carries the
  Windows-1252 declaration, SYSPRO's root attributes, lowercase roots for transaction/setup
  output, per-field `Value`/`ErrorNumber`/`ErrorDescription` blocks and a zero-padded
  `StatusOfItems`. `ValidateOnly` and `ApplyIfEntireDocumentValid` are honoured.
- The SYSPRO 8 OData service (read-only, basic auth) at `/SYSPROOData/{CompanyId}/{Table}` with
  `$filter`, `$orderby`, `$top`, `$skip`, `$select`, `$count` and `@odata.nextLink`.

Facts the notes mark unconfirmed are marked "(unconfirmed)" where they are decided; those a site
may vary (seats, idle expiry, page sizes, a rate limit, the supplier and stock-adjustment objects,
the change column) are `SysproSettings`, changeable at run time.

Modules: `tables` (columns, kit tables, seed), `query` (COMFND/OData filters, planner), `sessions`
(logons and seats), `rules` (business objects), `routes` (HTTP surface), `sandbox` (state, hooks).
"""

from .routes import ODATA_SITE, REST_BASE
from .sandbox import SysproSandbox, SysproSettings

__all__ = ["ODATA_SITE", "REST_BASE", "SysproSandbox", "SysproSettings"]
