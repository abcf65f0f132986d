"""The checks of a scenario that need the file system: checkpoints, prompt files, img2img inputs.

They run on the raw merged data (after ``extends:``), so their problems are reported together with the
schema's, each with its file and line."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from stress.errors import Problem
from stress.yamlsafe import Located


def check_files(data: dict, located: Located, base_dir: Path) -> list[Problem]:
    """Checks that need the file system (checkpoints, prompt files, input folders).

    Works on the raw merged data, so these problems are reported together with schema problems."""
    problems = []

    def where(*loc: Any) -> tuple[str, int | None]:
        probe = tuple(loc)
        while probe not in located.lines and probe:
            probe = probe[:-1]
        return located.lines.get(probe, (str(base_dir), None))

    def get(*keys: str) -> Any:
        cur: Any = data
        for k in keys:
            if not isinstance(cur, dict):
                return None
            cur = cur.get(k)
        return cur

    for key in ("base", "refiner"):
        src = get("model", key)
        if not isinstance(src, str) or src.startswith("builtin:"):
            continue
        p = resolve_path(src, base_dir)
        f, line = where("model", key)
        if not p.exists():
            problems.append(Problem(f, line, f"model.{key}", f"checkpoint not found: {p} "
                                    "(give a local diffusers folder or a .safetensors file, "
                                    "or use builtin:sdxl for random weights)"))
        elif p.is_file() and p.suffix not in (".safetensors", ".ckpt"):
            problems.append(Problem(f, line, f"model.{key}", f"{p.name} is not a .safetensors checkpoint"))
        elif p.is_dir() and not (p / "model_index.json").exists():
            problems.append(Problem(f, line, f"model.{key}",
                                    f"{p} is not a diffusers folder (no model_index.json)"))
    for key in ("prompt", "negative_prompt"):
        spec = get(key)
        if key == "prompt" and isinstance(spec, str) and not spec.strip():
            f, line = where(key)
            problems.append(Problem(f, line, key, "the prompt is empty; write one or use 'tokens: N'"))
        if not isinstance(spec, dict):
            continue
        if key == "prompt" and isinstance(spec.get("text"), str) and not spec["text"].strip():
            f, line = where(key, "text")
            problems.append(Problem(f, line, f"{key}.text", "the prompt is empty; write one or use 'tokens: N'"))
        if not isinstance(spec.get("file"), str):
            continue
        p = resolve_path(spec["file"], base_dir)
        f, line = where(key, "file")
        if not p.is_file():
            problems.append(Problem(f, line, f"{key}.file", f"prompt file not found: {p}"))
        elif not p.read_text(encoding="utf-8", errors="replace").strip():
            problems.append(Problem(f, line, f"{key}.file", f"prompt file is empty: {p}; write a prompt in it"))
    inputs = get("img2img", "inputs")
    if isinstance(inputs, str):
        p = resolve_path(inputs, base_dir)
        f, line = where("img2img", "inputs")
        if not p.is_dir():
            problems.append(Problem(f, line, "img2img.inputs", f"input folder not found: {p}"))
        elif not any(x.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp") for x in p.iterdir()):
            problems.append(Problem(f, line, "img2img.inputs", f"no .png/.jpg/.webp images in {p}"))
    return problems


def resolve_path(value: str, base_dir: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base_dir / p)
