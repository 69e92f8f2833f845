"""Sealgate policy: Rego rules that forbid retention and training use, and their engines.

``PolicyEngine.decide(PolicyInput) -> Decision``; engines are ``RegopyEngine`` (embedded,
default) and ``OPAEngine`` (an OPA server). See docs/policy.md.
"""

from . import _native  # noqa: F401  first: rego-cpp before any other C++ library (_native.py)

# isort: split
from ._bundle import TENANT_NAME, PolicyBundle, bundle_digest, contract_owner, listing_digest, load_bundle
from ._decision import Decision, Denial
from ._engine import PolicyEngine
from ._errors import PolicyBundleError, PolicyError, PolicyInputError, PolicyUnavailable
from ._input import PolicyInput, RequestParams
from ._opa import OPAEngine
from ._rego_tests import RegoTestResult, run_rego_tests
from ._regopy import RegopyEngine
from ._watch import BundleWatcher

__all__ = [
    "TENANT_NAME",
    "BundleWatcher",
    "Decision",
    "Denial",
    "OPAEngine",
    "PolicyBundle",
    "PolicyBundleError",
    "PolicyEngine",
    "PolicyError",
    "PolicyInput",
    "PolicyInputError",
    "PolicyUnavailable",
    "RegoTestResult",
    "RegopyEngine",
    "RequestParams",
    "bundle_digest",
    "contract_owner",
    "listing_digest",
    "load_bundle",
    "run_rego_tests",
]
