"""A package on purpose: without it pytest's importlib mode names these modules
`gateway.tests.unit.*` from the repo root and shadows the real `gateway` package with the
`gateway/` directory. As a package they import as `unit.*` and `gateway` stays the app."""
