"""Rule packs: schema, loading and validation, the rule engine, and the default packs."""
