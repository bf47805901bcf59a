"""RBAC proven by use: the calls each service account made, against the Roles the kit binds to it.

:func:`check_rbac_by_use` reads the Kubernetes API emulator's request log
(:attr:`tests.support.kube_emulator.KubeEmulator.log`) and the Roles it enforces
(:meth:`~tests.support.kube_emulator.KubeEmulator.bind_kit_rbac`) and reports, per
account: the distinct calls made, those refused (403), and every verb a Role
grants that no call used. Grants that only Kubeflow's own machinery uses inside
a pipeline pod (which the box does not run) are listed in :data:`PLATFORM_GRANTS`
with the reason, and reported apart rather than silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# (api group, resource, verb, resourceName or None) -> who uses it on a real cluster
PLATFORM_GRANTS = {
    ("", "configmaps", "get", "kfp-launcher"): "Kubeflow Pipelines' driver/launcher reads its kfp-launcher ConfigMap",
    ("argoproj.io", "workflowtaskresults", "create", None): "Argo's executor reports each step's outputs",
    ("argoproj.io", "workflowtaskresults", "patch", None): "Argo's executor reports each step's outputs",
}


@dataclass
class RbacReport:
    """What :func:`check_rbac_by_use` found."""

    used: dict[str, list] = field(default_factory=dict)  # account -> distinct ApiCalls, first-use order
    denied: list = field(default_factory=list)  # LoggedCall answered 403 (or 401)
    unused: dict[str, list[tuple]] = field(default_factory=dict)  # account -> granted (group, resource, verb, name)
    platform: dict[str, list[tuple]] = field(default_factory=dict)  # account -> PLATFORM_GRANTS it holds

    def text(self) -> str:
        lines = []
        for account, calls in self.used.items():
            lines.append(f"{account}: {len(calls)} distinct call(s)")
            lines.extend(f"  {c.verb} {c.api_group or 'core'}/{c.resource}" for c in _distinct_kinds(calls))
            for g in self.unused.get(account, ()):
                lines.append(f"  UNUSED grant: {g[2]} {g[0] or 'core'}/{g[1]}" + (f" ({g[3]})" if g[3] else ""))
            for g in self.platform.get(account, ()):
                lines.append(f"  platform grant (not exercised here): {g[2]} {g[0] or 'core'}/{g[1]} - {PLATFORM_GRANTS[g]}")
        lines.extend(f"DENIED {d.status}: {d.user} {d.call}" for d in self.denied)
        return "\n".join(lines)


def _distinct_kinds(calls):
    seen, out = set(), []
    for c in calls:
        key = (c.verb, c.api_group, c.resource)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def _grants(role: dict) -> list[tuple]:
    out = []
    for rule in role.get("rules") or ():
        for group in rule.get("apiGroups") or ():
            for resource in rule.get("resources") or ():
                for verb in rule.get("verbs") or ():
                    for name in rule.get("resourceNames") or (None,):
                        out.append((group, resource, verb, name))
    return out


def _uses(call, grant: tuple) -> bool:
    group, resource, verb, name = grant
    return (call.api_group == group and call.resource == resource and call.verb == verb
            and (name is None or call.name == name))


def check_rbac_by_use(kube, namespace: str, accounts) -> RbacReport:
    """Check every logged call of ``accounts`` (service-account names in ``namespace``) against their Roles."""
    report = RbacReport()
    log = kube.log
    report.denied = [e for e in log if e.status in (401, 403)]
    for account in accounts:
        user = f"system:serviceaccount:{namespace}:{account}"
        calls = []
        for e in log:
            if e.user == user and e.call not in calls:
                calls.append(e.call)
        report.used[account] = calls
        roles = kube.handler.roles.get(user, [])
        unused, platform = [], []
        for role in roles:
            for g in _grants(role):
                if any(_uses(c, g) for c in calls):
                    continue
                (platform if g in PLATFORM_GRANTS else unused).append(g)
        report.unused[account] = unused
        report.platform[account] = platform
    return report
