"""The node classifier: node groups, their rules, and what a node is classified as.

``rules`` (pure) validates and matches rules and translates them to PuppetDB queries;
``groups`` (pure) is the group tree, the changes it accepts, and classification;
``store`` keeps groups in the database. The HTTP API is ``podium.server.classifier_api``
(PE's ``/classifier-api/v1``).

    tree = GroupStore(store).hierarchy()        # from podium.classifier.store
    classify(tree, "web-01", facts, {"certname": "web-01"}).environment
    group_members(tree, group_id, ((n.certname, n.facts, {}) for n in store.list_nodes()))

Errors (all :class:`~podium.errors.PodiumError`, kinds as PE's classifier has them)::

    ValidationError        schema-violation, malformed-uuid, conflicting-ids: 400
    └── RuleError          a rule breaking the grammar (details["path"] names the part)
    NotFound               not-found: 404
    Conflict               conflict (a stale serial_number): 409
    GroupError             missing-parent, inheritance-cycle, uniqueness-violation,
                           children-present, root-rule-edit, root-group-delete: 422
    ClassificationConflict classification-conflict: 500
"""

from podium.classifier.groups import (
    DEFAULT_ENVIRONMENT,
    ROOT_ID,
    ROOT_NAME,
    ROOT_RULE,
    Classification,
    ClassificationConflict,
    Group,
    GroupError,
    GroupId,
    Hierarchy,
    classify,
    group_members,
    groups_matching,
)
from podium.classifier.rules import (
    RuleError,
    match_rule,
    pinned_nodes,
    rule_to_ast,
    rule_to_nodes_query,
    validate_rule,
)

__all__ = [
    "DEFAULT_ENVIRONMENT",
    "ROOT_ID",
    "ROOT_NAME",
    "ROOT_RULE",
    "Classification",
    "ClassificationConflict",
    "Group",
    "GroupError",
    "GroupId",
    "Hierarchy",
    "RuleError",
    "classify",
    "group_members",
    "groups_matching",
    "match_rule",
    "pinned_nodes",
    "rule_to_ast",
    "rule_to_nodes_query",
    "validate_rule",
]
