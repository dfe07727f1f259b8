"""Privacy controls: consent gating, visitor-IP handling, parameter and body
scrubbing, cookie policy and server-set cookies, and the audit that shows
them.

A rule's `[privacy]` section is parsed with the rule (`parse`), into frozen
objects (`model`); `Privacy` turns a rule set and the site's consent
settings (`consent`) into per-rule plans the relay consults (`plan`).
"""

from .consent import ConsentConfig, load_consent
from .plan import Decision, Privacy, PrivacyPlan

__all__ = ["ConsentConfig", "Decision", "Privacy", "PrivacyPlan", "load_consent"]
