"""The spec: loading with source positions, schema validation, model and semantic checks."""
