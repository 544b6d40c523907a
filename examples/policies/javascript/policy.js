// Example policy in JavaScript: the default BillStack scope table plus a `reports` resource
// guarded by a new scope, `reports:read`. It shows that a policy need not be written in Rust:
// componentize-js turns this module and the WIT world in `wit/` into a component the host runs
// exactly like a Rust one (same sandbox, same limits, same validation at upload).
//
// Build:  npm ci && npm run build        (writes policy.wasm)
// Test:   billstack policy test policy.wasm cases.toml
//
// The WIT world maps to JavaScript like this: records are plain objects with camelCase fields
// (`request.key.scopes`, `requiredScope`), `option<T>` is the value or `undefined`, and the
// `decision` variant is `{ tag: "allow" }` or `{ tag: "deny", val: { status, code, ... } }`.
// Keep no state between calls: warm instances are reused for later requests.

const SCOPES = [
  ["customers:read", "Read customers"],
  ["customers:write", "Create, update and delete customers"],
  ["products:read", "Read products and prices"],
  ["products:write", "Create, update and delete products and prices"],
  ["subscriptions:read", "Read subscriptions and checkout sessions"],
  ["subscriptions:write", "Cancel and delete subscriptions, start checkout sessions"],
  ["analytics:read", "Read analytics"],
  ["referrals:read", "Read referral codes and the referral configuration"],
  ["referrals:write", "Create and delete referral codes, apply referrals, change the configuration"],
  ["reports:read", "Read and download generated reports"],
];

const READ = ["GET"];
const WRITE = ["POST", "PUT", "PATCH", "DELETE"];

// Each route: the methods, the path pattern below the project, and the scope it needs.
// In a pattern, `*` is any one non-empty segment and a trailing `**` is any further segments.
const ROUTES = [
  [READ, "customers", "customers:read"],
  [READ, "customers/*", "customers:read"],
  [WRITE, "customers", "customers:write"],
  [WRITE, "customers/*", "customers:write"],
  [READ, "products", "products:read"],
  [READ, "products/*", "products:read"],
  [READ, "prices", "products:read"],
  [READ, "prices/*", "products:read"],
  [WRITE, "products", "products:write"],
  [WRITE, "products/*", "products:write"],
  [WRITE, "prices", "products:write"],
  [WRITE, "prices/*", "products:write"],
  [READ, "subscriptions", "subscriptions:read"],
  [READ, "subscriptions/*", "subscriptions:read"],
  [READ, "checkout-sessions/*", "subscriptions:read"],
  [["POST"], "subscriptions/*/cancel", "subscriptions:write"],
  [["POST"], "checkout-sessions", "subscriptions:write"],
  [["DELETE"], "subscriptions/*", "subscriptions:write"],
  [READ, "analytics/**", "analytics:read"],
  [READ, "referrals/codes", "referrals:read"],
  [READ, "referrals/codes/*", "referrals:read"],
  [READ, "referrals/config", "referrals:read"],
  [["POST"], "referrals/codes", "referrals:write"],
  [["POST"], "referrals/apply", "referrals:write"],
  [["PUT", "PATCH"], "referrals/config", "referrals:write"],
  [["DELETE"], "referrals/codes/*", "referrals:write"],
  // The new resource.
  [READ, "reports", "reports:read"],
  [READ, "reports/*", "reports:read"],
  [READ, "reports/*/download", "reports:read"],
].map(([methods, pattern, scope]) => ({ methods, pattern: pattern.split("/"), scope }));

function matches(pattern, segments) {
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] === "**") {
      return segments.slice(i).every((s) => s !== "");
    }
    if (i >= segments.length || segments[i] === "") return false;
    if (pattern[i] !== "*" && pattern[i] !== segments[i]) return false;
  }
  return segments.length === pattern.length;
}

function requiredScope(method, path) {
  const m = method === "HEAD" ? "GET" : method;
  if (!path.startsWith("/")) return undefined;
  let rest = path.slice(1);
  if (rest.endsWith("/")) rest = rest.slice(0, -1);
  if (rest === "") return undefined;
  const segments = rest.split("/");
  const route = ROUTES.find((r) => r.methods.includes(m) && matches(r.pattern, segments));
  return route?.scope;
}

export function info() {
  return {
    name: "javascript-reports",
    version: "1.0.0",
    scopes: SCOPES.map(([name, description]) => ({ name, description })),
  };
}

export function authorize(request) {
  const scope = requiredScope(request.method, request.path);
  if (scope === undefined) {
    return {
      tag: "deny",
      val: {
        status: 404,
        code: "unknown_route",
        message: `${request.method} ${request.path} is not a known route`,
        requiredScope: undefined,
      },
    };
  }
  if (request.key.scopes.includes(scope)) {
    return { tag: "allow" };
  }
  return {
    tag: "deny",
    val: {
      status: 403,
      code: "insufficient_scope",
      message: `this key lacks the ${scope} scope`,
      requiredScope: scope,
    },
  };
}
