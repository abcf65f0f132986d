"""The plan as text a person can read (``stress plan`` without ``--json``)."""
from __future__ import annotations


def gib(n: int | None) -> str:
    return "-" if n is None else f"{n / (1 << 30):.2f} GiB"


def _g(n: int | None) -> str:
    return "-" if n is None else f"{n / (1 << 30):.2f}"


def tflop(n: int) -> str:
    return f"{n / 1e12:,.1f}"


def gflop(n: int) -> str:
    return f"{n / 1e9:,.0f}"


def _count(n: int) -> str:
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def _table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> list[str]:
    """The lines of a table (stress.tables: rich; plain ASCII when not on a terminal); numbers right-aligned
    (by default every column but the first)."""
    from stress.tables import table_lines

    return table_lines(headers, rows, right=right if right is not None else range(1, len(headers)))


def render_text(plan: dict) -> str:
    out: list[str] = []
    st = plan["settings"]
    acc = plan["accounting"]
    mem = plan["memory"]
    out.append(f"plan: {plan['scenario']}  ({plan['workload']}, {st['dtype']}, attention {st['attention']}, "
               f"VAE decode in {st['vae_decode_dtype']}, batch {st['batch_size']}, CFG {st['cfg']})")
    placed = [k for k in ("cpu_offload", "sequential_offload", "precomputed_embeds") if st.get(k)]
    if placed or st.get("vae", "default") != "default" or st.get("safety_checker"):
        out.append("  settings " + ", ".join(placed + ([f"vae {st['vae']}"] if st.get("vae", "default") != "default" else [])
                                             + (["safety checker (on the GPU in every mode)"] if st.get("safety_checker") else [])))
    for role, m in plan["models"].items():
        parts = ", ".join(f"{n} {c['parameters'] / 1e6:,.0f}M" for n, c in m["components"].items())
        out.append(f"  {role:8} {m['source']} [{m['kind']}]: {parts} = {gib(m['bytes'])} of weights")
    p, n = plan["prompts"]["prompt"], plan["prompts"]["negative"]
    out.append(f"  prompt   {p['tokens']} tokens -> {p['chunks']} chunks; negative {n['tokens']} tokens -> "
               f"{n['chunks']} chunks; padded to {plan['prompts']['padded_chunks']} "
               f"(cross-attention keys {plan['prompts']['cross_attention_keys']}; {p['how']})")
    out.append("")
    out.append(f"workload: {acc['images']} images in {acc['batches']} batches; per image {acc['base_steps_per_image']} "
               f"base + {acc['refiner_steps_per_image']} refiner steps x CFG {acc['cfg_batch']} = "
               f"{acc['unet_evaluations_per_image']} UNet evaluations")
    rows = []
    for r in acc["per_resolution"]:
        u = r["unet"]
        att = [u[k]["attention_per_evaluation"] for k in ("base", "refiner") if k in u]
        rows.append([f"{r['width']}x{r['height']}", str(r["images"]), "x".join(map(str, r["latent"])),
                     _count(sum(a["self_qk"] for a in att)), _count(sum(a["cross_qk"] for a in att)),
                     gflop(u.get("base", {}).get("flops_per_evaluation", 0)),
                     gflop(u["refiner"]["flops_per_evaluation"]) if "refiner" in u else "-",
                     tflop(r.get("vae_decode", {}).get("flops", 0)), tflop(r["flops"])])
    out += ["  " + line for line in _table(
        ["resolution", "images", "latent", "self QK/eval", "cross QK/eval", "base GFLOP/eval",
         "refiner GFLOP/eval", "decode TFLOP", "TFLOP/image"], rows)]
    te = ", ".join(f"{k} {v['forwards_per_session']} chunk forwards" for k, v in acc["text_encoders"].items())
    out.append(f"  text encoding (once a session; the worker caches the embeddings): {te}")
    out.append(f"  session: {acc['unet_evaluations']:,} UNet evaluations, {tflop(acc['flops'])} TFLOP "
               f"({acc['latent_positions']:,} latent positions)")
    out.append("")
    g = mem["gpu"]
    if g["available"] is None:
        gpu_line = "no GPU detected; use --gpu-memory" if g["source"].startswith("no GPU") else g["source"]
        out.append(f"memory: {gpu_line}")
    else:
        name = f"{g['name']}, " if g.get("name") else ""
        extra = (f" ({gib(g['total'])} total, {gib(g['used_by_others'])} in use by others)"
                 if g.get("total") else "")
        out.append(f"memory: {name}{gib(g['available'])} available from {g['source']}{extra}")
    rows = []
    for r in mem["resolutions"]:
        o = r["overhead"]
        fits = "-" if r["fits"] is None else ("yes" if r["fits"] else "NO")
        rows.append([f"{r['width']}x{r['height']}", _g(r["weights"]), _g(r["activations"]), _g(o["allocator"]),
                     _g(o["cublas_workspace"] + o["cudnn_workspace_estimate"] + o["cuda_context_estimate"]),
                     _g(r["predicted_peak"]), _g(r["required"]), fits, r["peak_stage"]])
    out += ["  " + line for line in _table(
        ["resolution", "weights", "activations", "allocator", "ctx+workspace", "predicted peak", "required",
         "fits", "peak at"], rows, right={1, 2, 3, 4, 5, 6})]
    out.append("  (GiB; predicted peak = device memory in use at the peak as nvidia-smi shows it; required = "
               "smallest GPU memory it runs in)")
    worst = max(mem["resolutions"], key=lambda r: r["predicted_peak"])
    out.append(f"  largest peak: {worst['width']}x{worst['height']} in {worst['peak_stage']} "
               f"({worst['peak_module'] or '-'})")
    stage_rows = [[s["stage"], _g(s["peak"]), _g(s["weights"]), _g(s["activations"]), s["peak_module"] or "-"]
                  for s in worst["stages"]]
    out += ["    " + line for line in _table(["stage", "live peak", "weights", "activations", "where"],
                                             stage_rows, right={1, 2, 3})]
    s = mem["session"]
    fits = "" if s["fits"] is None else ("; fits" if s["fits"] else "; DOES NOT FIT")
    out.append(f"  session (long-lived worker, every resolution in turn): predicted peak {gib(s['predicted_peak'])}, "
               f"required {gib(s['required'])}{fits}")
    om = mem["overhead_model"]
    out.append(f"  overhead model: CUDA context {gib(om['cuda_context'])} (estimate); cuDNN workspace "
               f"{om['conv_workspace_factor']:g} x each convolution's input while it runs (estimate; "
               f"opportunistic: required counts {om['cudnn_min_workspace'] >> 20} MiB); cuBLAS workspace "
               f"{om['cublas_workspace'] / (1 << 20):.2f} MiB")
    for note in plan.get("notes", []):
        out.append(f"note: {note}")
    out.append(f"(planned in {plan['seconds']:.1f} s; see docs/plan.md for the method)")
    return "\n".join(out) + "\n"
