"""The README's Python examples run as written (in order, sharing one namespace)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    namespace = {}
    for k, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md python block {k + 1}", "exec"), namespace)
        except Exception as err:  # pragma: no cover - the message is the point
            raise AssertionError(f"README python block {k + 1} failed: {err!r}\n{block}") from err
    assert namespace["J"].shape == (10, 784)


def test_readme_lists_every_builtin_of_the_registry():
    """The README's list of layers and losses is the registry's: a new built-in must appear there."""
    import jacket
    text = README.read_text()
    listed = text[text.index("Layers (the registry"):text.index("Every rule follows one signature")]
    names = {type(entry.build(2, 3)).__name__ for entry in jacket.registry.LAYERS}
    names |= {type(entry.build()).__name__ for entry in jacket.registry.SHAPED}
    names |= {cls.__name__ for cls in jacket.registry.LOSSES.values()}
    missing = sorted(name for name in names if f"`{name}" not in listed)
    assert not missing, f"README does not list {missing}"
