# Example policy in Python: the default BillStack scope table plus a `reports` resource guarded
# by a new scope, `reports:read` (the same policy as ../javascript, so the two can be compared).
# componentize-py (PyPI) turns this module and the WIT world in `wit/` into a component the host
# runs exactly like a Rust one: same sandbox, same validation at upload. It bundles CPython, so
# it is far bigger than a Rust policy: docs/writing-policies.md says what that costs.
#
# Build:  bash build.sh policy.wasm        (a virtualenv with componentize-py, pinned)
# Test:   billstack policy test policy.wasm ../javascript/cases.toml ../../policy-tests/default-scopes.toml
#         (the same policy as the JavaScript example, so the same cases)
#
# The WIT world maps to Python like this: records are dataclasses with snake_case fields
# (`request.key.scopes`, `required_scope`), `option<T>` is the value or `None`, and the
# `decision` variant is `Decision_Allow()` or `Decision_Deny(Denial(...))`. Keep no state
# between calls: warm instances are reused for later requests.

import wit_world
from wit_world.imports.types import (
    Decision_Allow,
    Decision_Deny,
    Denial,
    PluginInfo,
    Request,
    ScopeInfo,
)

SCOPES = [
    ("customers:read", "Read customers"),
    ("customers:write", "Create, update and delete customers"),
    ("products:read", "Read products and prices"),
    ("products:write", "Create, update and delete products and prices"),
    ("subscriptions:read", "Read subscriptions and checkout sessions"),
    ("subscriptions:write", "Cancel and delete subscriptions, start checkout sessions"),
    ("analytics:read", "Read analytics"),
    ("referrals:read", "Read referral codes and the referral configuration"),
    ("referrals:write", "Create and delete referral codes, apply referrals, change the configuration"),
    ("reports:read", "Read and download generated reports"),
]

READ = ("GET",)
WRITE = ("POST", "PUT", "PATCH", "DELETE")

# Each route: the methods, the path pattern below the project, and the scope it needs. In a
# pattern, `*` is any one non-empty segment and a trailing `**` is any further segments.
ROUTES = [
    (methods, pattern.split("/"), scope)
    for methods, pattern, scope in [
        (READ, "customers", "customers:read"),
        (READ, "customers/*", "customers:read"),
        (WRITE, "customers", "customers:write"),
        (WRITE, "customers/*", "customers:write"),
        (READ, "products", "products:read"),
        (READ, "products/*", "products:read"),
        (READ, "prices", "products:read"),
        (READ, "prices/*", "products:read"),
        (WRITE, "products", "products:write"),
        (WRITE, "products/*", "products:write"),
        (WRITE, "prices", "products:write"),
        (WRITE, "prices/*", "products:write"),
        (READ, "subscriptions", "subscriptions:read"),
        (READ, "subscriptions/*", "subscriptions:read"),
        (READ, "checkout-sessions/*", "subscriptions:read"),
        (("POST",), "subscriptions/*/cancel", "subscriptions:write"),
        (("POST",), "checkout-sessions", "subscriptions:write"),
        (("DELETE",), "subscriptions/*", "subscriptions:write"),
        (READ, "analytics/**", "analytics:read"),
        (READ, "referrals/codes", "referrals:read"),
        (READ, "referrals/codes/*", "referrals:read"),
        (READ, "referrals/config", "referrals:read"),
        (("POST",), "referrals/codes", "referrals:write"),
        (("POST",), "referrals/apply", "referrals:write"),
        (("PUT", "PATCH"), "referrals/config", "referrals:write"),
        (("DELETE",), "referrals/codes/*", "referrals:write"),
        # The new resource.
        (READ, "reports", "reports:read"),
        (READ, "reports/*", "reports:read"),
        (READ, "reports/*/download", "reports:read"),
    ]
]


def matches(pattern, segments):
    for i, part in enumerate(pattern):
        if part == "**":
            return all(s != "" for s in segments[i:])
        if i >= len(segments) or segments[i] == "":
            return False
        if part != "*" and part != segments[i]:
            return False
    return len(segments) == len(pattern)


def required_scope(method, path):
    method = "GET" if method == "HEAD" else method
    if not path.startswith("/"):
        return None
    rest = path[1:]
    if rest.endswith("/"):
        rest = rest[:-1]
    if rest == "":
        return None
    segments = rest.split("/")
    for methods, pattern, scope in ROUTES:
        if method in methods and matches(pattern, segments):
            return scope
    return None


class WitWorld(wit_world.WitWorld):
    def info(self) -> PluginInfo:
        return PluginInfo(
            name="python-reports",
            version="1.0.0",
            scopes=[ScopeInfo(name=n, description=d) for n, d in SCOPES],
        )

    def authorize(self, request: Request):
        scope = required_scope(request.method, request.path)
        if scope is None:
            return Decision_Deny(
                Denial(
                    status=404,
                    code="unknown_route",
                    message=f"{request.method} {request.path} is not a known route",
                    required_scope=None,
                )
            )
        if scope in request.key.scopes:
            return Decision_Allow()
        return Decision_Deny(
            Denial(
                status=403,
                code="insufficient_scope",
                message=f"this key lacks the {scope} scope",
                required_scope=scope,
            )
        )
