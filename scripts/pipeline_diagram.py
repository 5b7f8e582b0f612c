"""Print a Mermaid diagram of the registered pipelines (the README's picture is its output).

python scripts/pipeline_diagram.py
"""

from __future__ import annotations

import re
from pathlib import Path

from kedro.framework.project import pipelines
from kedro.framework.startup import bootstrap_project

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ORDER = [
    "data_engineering",
    "feature_engineering",
    "language_model",
    "training",
    "evaluation",
    "inference",
]


def _id(name: str) -> str:
    return re.sub(r"\W", "_", name)


def mermaid() -> str:
    """Nodes grouped by pipeline; an edge per dataset that one node hands to another."""
    bootstrap_project(PROJECT_ROOT)
    lines = ["flowchart TD"]
    nodes = [node for name in ORDER for node in pipelines[name].nodes]
    producers = {output: node.name for node in nodes for output in node.outputs}
    consumed = {dataset for node in nodes for dataset in node.inputs}
    for name in ORDER:
        lines.append(f"  subgraph {name}")
        lines += [f"    {_id(node.name)}[{node.name}]" for node in pipelines[name].nodes]
        lines.append("  end")
    for node in nodes:
        for dataset in node.inputs:
            if dataset.startswith("params:"):
                continue
            if dataset in producers:
                lines.append(f"  {_id(producers[dataset])} -->|{dataset}| {_id(node.name)}")
            else:
                lines.append(f"  {_id(dataset)}[({dataset})] --> {_id(node.name)}")
        for dataset in node.outputs:
            if dataset not in consumed:
                lines.append(f"  {_id(node.name)} --> {_id(dataset)}[({dataset})]")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(mermaid(), end="")
