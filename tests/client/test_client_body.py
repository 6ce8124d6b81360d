"""`--prompt`, `--set` and input images become the request body of one of the API's two
formats (simple: named parameters; advanced: node id -> inputs)."""

from __future__ import annotations

import pytest

from comfy_api.body import Assignment, BodyError, build_body, parse_assignment, parse_value


@pytest.mark.parametrize(("text", "value"), [
    ("42", 42), ("0.5", 0.5), ("true", True), ("null", None), ('"42"', "42"), ("[1, 2]", [1, 2]),
    ("euler", "euler"), ("a red fox", "a red fox"), ("random", "random"), ("", ""),
])
def test_values_are_json_when_they_parse_else_text(text: str, value: object) -> None:
    assert parse_value(text) == value


def test_assignments_name_a_node_input_or_a_simple_parameter() -> None:
    assert parse_assignment("3.seed=42") == Assignment("3", "seed", 42)
    assert parse_assignment("6:3.blur_radius=5") == Assignment("6:3", "blur_radius", 5)  # inside a subgraph
    assert parse_assignment("6.text=a=b") == Assignment("6", "text", "a=b")
    assert parse_assignment("steps=20") == Assignment(None, "steps", 20)


def test_node_inputs_make_the_advanced_format() -> None:
    body = build_body(None, [parse_assignment("1.width=128"), parse_assignment("1.height=96"),
                             parse_assignment("2.filename_prefix=x")])
    assert body == {"1": {"inputs": {"width": 128, "height": 96}}, "2": {"inputs": {"filename_prefix": "x"}}}


def test_prompt_and_named_parameters_make_the_simple_format() -> None:
    body = build_body("a fox", [parse_assignment("seed=random"), parse_assignment("steps=25")])
    assert body == {"prompt": "a fox", "seed": "random", "steps": 25}


def test_input_images_and_client_id_go_with_either_format() -> None:
    ref = {"upload_id": "0" * 32}
    assert build_body(None, [parse_assignment("2.x=1"), parse_assignment("client_id=me")], {"image": ref}) == {
        "2": {"inputs": {"x": 1}}, "client_id": "me", "image": ref}
    assert build_body("p", [], {"image": ref, "mask": ref}) == {"prompt": "p", "image": ref, "mask": ref}


def test_the_two_formats_cannot_be_mixed() -> None:
    with pytest.raises(BodyError, match=r"--set 6\.text sets node inputs.*\(prompt, steps\)"):
        build_body("a fox", [parse_assignment("steps=2"), parse_assignment("6.text=x")])


def test_images_are_given_as_files_not_with_set() -> None:
    with pytest.raises(BodyError, match="--image FILE"):
        build_body(None, [parse_assignment("image=photo.png")])
