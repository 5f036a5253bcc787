"""Machinery the vendor sandboxes share, written and tested once: the server clock
(`clock`), OData query reading (`odata`), tokens and auth headers (`tokens`), JSON answers
with pydantic-checked bodies (`routes`), the in-memory table store (`store`) and the seed-data
vocabulary (`seed`). Vendor facts never live here."""
