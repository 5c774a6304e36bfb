"""The tree a run starts from: the config's root task with its seeds, or an imported seed tree.

Inserting it is idempotent (keys are child-position paths), so every stage, first run or resume,
can call `insert_start` and get the same live nodes back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from explore_instruct.config import RunConfig
from explore_instruct.runstore import NodeRow, RunStore
from explore_instruct.tree import DomainTree, Example, TaskNode, load_upstream

ROOT_KEY = "root"  # a child's key is its parent's plus "/<position>"


@dataclass
class LiveNode:
    """A node as the stages see it while they work (ids from the store, examples that passed quality)."""

    id: int
    key: str
    name: str
    reason: str
    depth: int
    parent: LiveNode | None = None
    children: list[LiveNode] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)

    def path(self) -> list[str]:
        names: list[str] = []
        node: LiveNode | None = self
        while node is not None:
            names.append(node.name)
            node = node.parent
        return names[::-1]

    def peers(self) -> list[LiveNode]:
        return [] if self.parent is None else [c for c in self.parent.children if c is not self]

    def walk(self) -> list[LiveNode]:
        """This node and its descendants, level order."""
        out, frontier = [], [self]
        while frontier:
            out.extend(frontier)
            frontier = [c for n in frontier for c in n.children]
        return out


def starting_tree(config: RunConfig) -> DomainTree:
    if config.seed_tree is not None:
        return load_upstream(config.seed_tree)
    assert config.root is not None  # the config validator guarantees one of the two
    root = config.root
    return DomainTree(
        TaskNode(
            name=root.name,
            reason=root.description,
            examples=[Example(e.instruction, e.input, e.output) for e in root.examples],
        )
    )


def live_start(config: RunConfig) -> LiveNode:
    """The starting tree as live nodes, without a store (no ids: every id is -1); what the dry run
    renders its prompts from. Keys are the ones `insert_start` stores."""

    def build(node: TaskNode, key: str, depth: int, parent: LiveNode | None) -> LiveNode:
        live = LiveNode(-1, key, node.name, node.reason, depth, parent, examples=list(node.examples))
        live.children = [build(child, f"{key}/{j}", depth + 1, live) for j, child in enumerate(node.children)]
        return live

    return build(starting_tree(config).root, ROOT_KEY, 0, None)


def insert_start(store: RunStore, config: RunConfig) -> LiveNode:
    """Insert the starting tree (once) and return its root as live nodes."""
    tree = starting_tree(config)
    imported = config.seed_tree is not None

    def insert(node: TaskNode, key: str, depth: int, position: int, parent: LiveNode | None) -> LiveNode:
        node_id = store.add_node(
            key=key,
            parent_id=parent.id if parent else None,
            position=position,
            depth=depth,
            name=node.name,
            reason=node.reason,
            slug=node.slug,
        )
        live = LiveNode(node_id, key, node.name, node.reason, depth, parent, examples=list(node.examples))
        # The root's examples are the seeds (hand-written in the release too); the rest of an
        # imported tree is data.
        origin = "import" if imported and parent is not None else "seed"
        for i, ex in enumerate(node.examples):
            store.add_example(key=f"{key}#{origin}{i}", node_id=node_id, origin=origin, example=ex)
        live.children = [insert(child, f"{key}/{j}", depth + 1, j, live) for j, child in enumerate(node.children)]
        return live

    with store.transaction():
        return insert(tree.root, ROOT_KEY, 0, 0, None)


def load_live_tree(store: RunStore, *, origins: tuple[str, ...] = ("seed", "import", "explore")) -> LiveNode:
    """The tree as stored, with each node's examples of the given origins (start + exploration).

    An example counts unless its quality check failed: it is what the exploration that made it held
    in memory. Later stages' drops (duplicates, the diversity filter) must not change what a re-run
    shows in its prompts, or a resumed run would send requests the first run never sent.
    """
    view = store.tree_view()

    def make(row: NodeRow, parent: LiveNode | None) -> LiveNode:
        node = LiveNode(row.id, row.key, row.name, row.reason, row.depth, parent)
        if parent is not None:
            parent.children.append(node)
        return node

    by_id = view.build(make)
    for ex in store.examples(origins=origins):
        if ex.drop_stage != "quality":
            by_id[ex.node_id].examples.append(Example(ex.instruction, ex.input, ex.output))
    return by_id[view.root.id]
