#!/usr/bin/env python3
"""Validate a JSON file against one definition of the official DAP JSON schema.

usage: dap_schema_check.py SCHEMA DEFINITION FILE
Exit status: 0 valid, 1 invalid (the reason is printed), 77 skipped (no schema file
or no jsonschema module; a note is printed), 2 usage error.
"""
import json
import sys


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    schema_path, definition, path = sys.argv[1:]
    try:
        import jsonschema
    except ImportError:
        print("note: python3 jsonschema module missing; schema check skipped")
        return 77
    try:
        with open(schema_path) as f:
            schema = json.load(f)
    except OSError as e:
        print("note: DAP schema not available (%s); schema check skipped" % e)
        return 77
    if definition not in schema.get("definitions", {}):
        print("no definition %r in %s" % (definition, schema_path))
        return 2
    with open(path) as f:
        instance = json.load(f)
    # Validate against "#/definitions/<name>" with the whole definitions table in
    # scope so that the $refs (allOf Response/Event/ProtocolMessage) resolve.
    wrapper = {
        "$schema": schema.get("$schema", "http://json-schema.org/draft-04/schema#"),
        "$ref": "#/definitions/" + definition,
        "definitions": schema["definitions"],
    }
    cls = jsonschema.validators.validator_for(wrapper)
    errors = sorted(cls(wrapper).iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        for e in errors:
            print("%s: invalid at %s: %s" % (definition, "/".join(map(str, e.path)),
                                             e.message))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
