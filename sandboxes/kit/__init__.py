"""Machinery the vendor sandboxes share, written and tested once: the server clock
(`clock`), OData query reading (`odata`), tokens and auth headers (`tokens`), and JSON
answers with pydantic-checked bodies (`routes`). Vendor facts never live here."""
