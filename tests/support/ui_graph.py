"""UI-format workflows built the way the editor (frontend 1.27.10) saves them, for tests.

The layout follows the recorded pairs in tests/fixtures/comfyui/ui2api/: each node lists its
input sockets (inputs without a widget first, then one socket per widget, in the definition's
input_order), its outputs, and `widgets_values` with the entries the editor saves but never
sends (a seed's control value, LoadImage's upload button). `document("export")` writes what
Export writes instead: unconnected widget sockets dropped, link target slots renumbered.
Node definitions come from the recorded GET /object_info, never from the converter.
"""

from __future__ import annotations

import copy
from typing import Any

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_NAMES = ("seed", "noise_seed")


def _spec_type(raw: list[Any]) -> str:
    return "COMBO" if isinstance(raw[0], list) else raw[0]


def _options(raw: list[Any]) -> dict[str, Any]:
    return raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}


def _default(raw: list[Any]) -> Any:
    options = _options(raw)
    kind = _spec_type(raw)
    if kind == "COMBO":
        choices = raw[0] if isinstance(raw[0], list) else options.get("options", [])
        return options.get("default") or (choices[0] if choices else "")
    fallback = {"INT": 0, "FLOAT": 0, "STRING": "", "BOOLEAN": False}[kind]
    return options.get("default", fallback)


class UiGraph:
    """A graph under construction. Node and link ids count from 1 unless given."""

    def __init__(self, object_info: dict[str, Any]) -> None:
        self.object_info = object_info
        self.nodes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []
        self.groups: list[dict[str, Any]] = []
        self.subgraphs: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}
        self._next_node = 1
        self._next_link = 1

    # -- nodes -----------------------------------------------------------------------------
    def _add(self, node: dict[str, Any], node_id: int | None) -> int:
        if node_id is None:
            node_id = self._next_node
        self._next_node = max(self._next_node, node_id + 1)
        node["id"] = node_id
        node.setdefault("pos", [100 * len(self.nodes), 100])
        node.setdefault("size", [270, 100])
        node.setdefault("flags", {})
        node["order"] = len(self.nodes)
        self.nodes.append(node)
        return node_id

    def node(self, class_type: str, values: dict[str, Any] | None = None, *, title: str | None = None,
             mode: int = 0, controls: dict[str, Any] | None = None, node_id: int | None = None) -> int:
        """A backend node; `values` by widget name (others take the definition's default),
        `controls` the saved control value after a seed-like widget ("fixed" by default)."""
        values = values or {}
        controls = controls or {}
        definition = self.object_info[class_type]
        order = definition.get("input_order", {})
        specs: list[tuple[str, list[Any]]] = []
        for section in ("required", "optional"):
            for name in order.get(section, []):
                specs.append((name, definition["input"][section][name]))
        required = definition["input"].get("required", {})
        if any(_options(raw).get("image_upload") for raw in required.values()):
            specs.append(("upload", ["IMAGEUPLOAD", {}]))
        sockets: list[dict[str, Any]] = []
        widget_sockets: list[dict[str, Any]] = []
        widgets_values: list[Any] = []
        for name, raw in specs:
            kind = _spec_type(raw)
            options = _options(raw)
            if kind == "IMAGEUPLOAD":
                widget_sockets.append({"localized_name": "choose file to upload", "name": name, "type": kind,
                                       "widget": {"name": name}, "link": None})
                widgets_values.append("image")
                continue
            if kind not in WIDGET_TYPES or options.get("forceInput"):
                sockets.append({"localized_name": name, "name": name, "type": kind, "link": None})
                continue
            widget_sockets.append({"localized_name": name, "name": name, "type": kind,
                                   "widget": {"name": name}, "link": None})
            widgets_values.append(values.get(name, _default(raw)))
            control = options.get("control_after_generate")
            if kind == "INT" and (control or (control is None and name in SEED_NAMES)):
                widgets_values.append(controls.get(name, "fixed"))
            elif kind == "COMBO" and control:
                widgets_values += [controls.get(name, "fixed"), ""]
        outputs = [
            {"localized_name": name, "name": name, "type": kind, "links": None}
            for name, kind in zip(definition.get("output_name", []), definition.get("output", []))
        ]
        node: dict[str, Any] = {"type": class_type, "mode": mode, "inputs": sockets + widget_sockets,
                                "outputs": outputs, "properties": {"Node name for S&R": class_type}}
        if widgets_values:
            node["widgets_values"] = widgets_values
        if title is not None:
            node["title"] = title
        return self._add(node, node_id)

    def reroute(self, mode: int = 0, node_id: int | None = None) -> int:
        return self._add({"type": "Reroute", "mode": mode, "inputs": [{"name": "", "type": "*", "link": None}],
                          "outputs": [{"name": "", "type": "*", "links": None}],
                          "properties": {"showOutputText": False, "horizontal": False}}, node_id)

    def note(self, text: str, markdown: bool = False) -> int:
        return self._add({"type": "MarkdownNote" if markdown else "Note", "mode": 0, "inputs": [], "outputs": [],
                          "properties": {}, "widgets_values": [text], "color": "#432", "bgcolor": "#653"}, None)

    def primitive(self, value: Any, targets: list[tuple[int, str]], *, title: str | None = None,
                  control: str | None = "fixed", mode: int = 0) -> int:
        """The editor's legacy PrimitiveNode, wired to widget inputs `targets` (node, name)."""
        first_node, first_input = targets[0]
        kind = next(s["type"] for s in self._node(first_node)["inputs"] if s["name"] == first_input)
        node: dict[str, Any] = {
            "type": "PrimitiveNode", "mode": mode, "inputs": [],
            "outputs": [{"name": kind, "type": kind, "widget": {"name": first_input}, "links": None}],
            "properties": {"Run widget replace on values": False},
            "widgets_values": [value] + ([control] if control is not None else []),
        }
        if title is not None:
            node["title"] = title
        node_id = self._add(node, None)
        for target, name in targets:
            self.link(node_id, 0, target, name)
        return node_id

    def subgraph(self, inner: UiGraph, name: str, subgraph_id: str,
                 inputs: list[tuple[str, str, list[tuple[int, str]]]],
                 outputs: list[tuple[str, str, tuple[int, int]]]) -> str:
        """A subgraph definition made of `inner`'s nodes: each input (name, type, the inner
        (node, input name) it feeds), each output (name, type, the inner (node, slot) it shows)."""
        links = [{"id": l[0], "origin_id": l[1], "origin_slot": l[2], "target_id": l[3], "target_slot": l[4],
                  "type": l[5]} for l in inner.links]
        next_link = max((link["id"] for link in links), default=0) + 1
        definition_inputs = []
        for slot, (input_name, kind, targets) in enumerate(inputs):
            link_ids = []
            for node_id, target_input in targets:
                node = inner._node(node_id)
                target_slot = next(i for i, s in enumerate(node["inputs"]) if s["name"] == target_input)
                node["inputs"][target_slot]["link"] = next_link
                links.append({"id": next_link, "origin_id": -10, "origin_slot": slot, "target_id": node_id,
                              "target_slot": target_slot, "type": kind})
                link_ids.append(next_link)
                next_link += 1
            definition_inputs.append({"id": f"{subgraph_id}-in-{slot}", "name": input_name, "type": kind,
                                      "linkIds": link_ids, "localized_name": input_name})
        definition_outputs = []
        for slot, (output_name, kind, (node_id, origin_slot)) in enumerate(outputs):
            node = inner._node(node_id)
            output = node["outputs"][origin_slot]
            output["links"] = [*(output["links"] or []), next_link]
            links.append({"id": next_link, "origin_id": node_id, "origin_slot": origin_slot, "target_id": -20,
                          "target_slot": slot, "type": kind})
            definition_outputs.append({"id": f"{subgraph_id}-out-{slot}", "name": output_name, "type": kind,
                                       "linkIds": [next_link], "localized_name": output_name})
            next_link += 1
        self.subgraphs.append({
            "id": subgraph_id, "version": 1, "revision": 0, "config": {}, "name": name,
            "state": {"lastGroupId": 0, "lastNodeId": inner._next_node - 1, "lastLinkId": next_link - 1,
                      "lastRerouteId": 0},
            "inputNode": {"id": -10, "bounding": [0, 0, 120, 60]},
            "outputNode": {"id": -20, "bounding": [600, 0, 120, 60]},
            "inputs": definition_inputs, "outputs": definition_outputs, "widgets": [],
            "nodes": copy.deepcopy(inner.nodes), "groups": [], "links": links, "extra": {},
        })
        self.subgraphs += copy.deepcopy(inner.subgraphs)  # the editor lists nested ones at the top
        return subgraph_id

    def instance(self, subgraph_id: str, widgets_values: list[Any] | None = None, *, mode: int = 0,
                 title: str | None = None, node_id: int | None = None) -> int:
        """A node of a subgraph defined with `subgraph`; `widgets_values` of its promoted widgets."""
        definition = next(s for s in self.subgraphs if s["id"] == subgraph_id)
        inputs = []
        for slot in definition["inputs"]:
            socket: dict[str, Any] = {"localized_name": slot["name"], "name": slot["name"], "type": slot["type"],
                                      "link": None}
            if slot["type"] in WIDGET_TYPES:
                socket["widget"] = {"name": slot["name"]}
            inputs.append(socket)
        outputs = [{"localized_name": o["name"], "name": o["name"], "type": o["type"], "links": None}
                   for o in definition["outputs"]]
        node: dict[str, Any] = {"type": subgraph_id, "mode": mode, "inputs": inputs, "outputs": outputs,
                                "properties": {}}
        if widgets_values is not None:
            node["widgets_values"] = widgets_values
        if title is not None:
            node["title"] = title
        return self._add(node, node_id)

    def _node(self, node_id: int) -> dict[str, Any]:
        return next(n for n in self.nodes if n["id"] == node_id)

    # -- links -----------------------------------------------------------------------------
    def link(self, origin: int, slot: int, target: int, input_name: str = "") -> int:
        """Wire `origin`'s output `slot` to `target`'s input named `input_name` (a reroute's
        only input is ""). Returns the link id."""
        link_id = self._next_link
        self._next_link += 1
        source, destination = self._node(origin), self._node(target)
        output = source["outputs"][slot]
        target_slot = next(i for i, s in enumerate(destination["inputs"]) if s["name"] == input_name)
        destination["inputs"][target_slot]["link"] = link_id
        output["links"] = [*(output["links"] or []), link_id]
        kind = output["type"]
        if source["type"] == "Reroute":
            upstream = self._upstream_type(source)
            output["type"] = kind = upstream
        self.links.append([link_id, origin, slot, target, target_slot, kind])
        return link_id

    def _upstream_type(self, reroute: dict[str, Any]) -> str:
        link_id = reroute["inputs"][0]["link"]
        link = next((link for link in self.links if link[0] == link_id), None)
        return link[5] if link else "*"

    # -- the document ----------------------------------------------------------------------
    def document(self, form: str = "save") -> dict[str, Any]:
        nodes = copy.deepcopy(self.nodes)
        links = copy.deepcopy(self.links)
        document: dict[str, Any] = {
            "id": "00000000-0000-4000-8000-000000000000", "revision": 0,
            "last_node_id": max((n["id"] for n in nodes), default=0),
            "last_link_id": max((link[0] for link in links), default=0),
            "nodes": nodes, "links": links, "groups": copy.deepcopy(self.groups), "config": {},
            "extra": {"ds": {"scale": 1, "offset": [0, 0]}, **copy.deepcopy(self.extra)}, "version": 0.4,
        }
        if self.subgraphs:
            document["definitions"] = {"subgraphs": copy.deepcopy(self.subgraphs)}
        if form == "export":
            export(document)
        return document


def export(document: dict[str, Any]) -> dict[str, Any]:
    """What the editor's Export writes for a saved document (compressWidgetInputSlots)."""
    by_id = {link[0]: link for link in document["links"]}
    for node in document["nodes"]:
        for slot in node.get("inputs", []):
            slot.pop("localized_name", None)
        for slot in node.get("outputs", []):
            slot.pop("localized_name", None)
        node["inputs"] = [s for s in node.get("inputs", []) if not (s.get("widget") and s.get("link") is None)]
        for index, slot in enumerate(node["inputs"]):
            if slot.get("link") in by_id:
                by_id[slot["link"]][4] = index
    document["extra"]["frontendVersion"] = "1.27.10"
    return document
