"""Import the weights of the original Atari Decision Transformer (kzl/decision-transformer,
``atari/mingpt/model_atari.py``) into a ``HookedDecisionTransformer`` with
``positional: original``.

Sizes come from the tensors: ``d_model`` and T from ``pos_emb (1, 3T+1, d)``, ``max_timestep``
from ``global_pos_emb``, layers from ``blocks.{i}``, actions from ``head.weight``. Two settings
are not in the state dict and are arguments: the head count (``query.weight`` is ``[d, d]`` for
any split; paper: 8) and whether it is the ``naive`` behaviour-cloning model (the original
creates ``ret_emb`` either way).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from atari_dt.model.checkpoint import CheckpointError, check_state_dict
from atari_dt.model.config import ModelConfig

PAPER_N_HEADS = 8
IGNORED = ("tok_emb.weight",)  # unused by the original's Atari forward
_BLOCK = re.compile(r"blocks\.(\d+)\.")


@dataclass
class ImportReport:
    """What the importer inferred and what it left out."""

    config: ModelConfig
    inferred: dict[str, Any]
    """Each size read from the tensors, with the tensor it came from."""
    assumed: dict[str, Any]
    """Settings the checkpoint does not hold (e.g. ``n_heads``), with the value used."""
    ignored: list[str] = field(default_factory=list)
    """Original keys not carried over (unused embeddings, attention-mask buffers)."""


def convert_original_state_dict(
    state_dict: dict[str, torch.Tensor],
    *,
    n_heads: int = PAPER_N_HEADS,
    behaviour_cloning: bool = False,
    dropout: float = 0.1,
) -> tuple[dict[str, torch.Tensor], ImportReport]:
    """Our state dict and an ``ImportReport`` from an original DT state dict.

    ``behaviour_cloning`` says the checkpoint is the original's ``naive`` model (tokens
    ``(s, a)``): the state dict cannot tell, since the original creates ``ret_emb`` either way.

    Raises:
        CheckpointError: a key the original model does not have, a missing key, or a tensor
            whose shape does not fit the inferred sizes (named).
    """
    original = _strip_prefix(state_dict)
    cfg, inferred = _infer_config(original, n_heads, behaviour_cloning, dropout)
    ours: dict[str, torch.Tensor] = {}
    ignored = []
    for key, tensor in original.items():
        unused = behaviour_cloning and key.startswith("ret_emb.")
        if key in IGNORED or key.endswith(".attn.mask") or unused:
            ignored.append(key)
            continue
        if not tensor.is_floating_point():  # weights are floats; ints mean another file
            raise CheckpointError(
                f"original DT checkpoint: {key!r} is {tensor.dtype}, expected floating-point "
                "weights (is this a model's state dict?)"
            )
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"original DT checkpoint: {key!r} has {int((~torch.isfinite(tensor)).sum())} "
                "non-finite values (NaN or inf): the run it comes from diverged"
            )
        try:
            converted = _convert_key(key, tensor.float(), cfg)
        except RuntimeError as err:  # a reshape that does not fit the inferred sizes
            raise CheckpointError(
                f"original DT checkpoint: {key!r} has shape {list(tensor.shape)}, which does "
                f"not fit d_model={cfg.d_model}, n_heads={cfg.n_heads} ({err})"
            ) from err
        for name, value in converted.items():
            ours[name] = value.contiguous()
    assumed = {
        "n_heads": n_heads,
        "behaviour_cloning": behaviour_cloning,
        "dropout": dropout,
        "rtg_scale": 1.0,
        "b_U": "zeros",
    }
    return ours, ImportReport(cfg, inferred, assumed, ignored)


def load_original_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict saved by ``torch.save`` (loaded with ``weights_only=True``: no code runs).
    Accepts the state dict itself or a dict holding it under ``state_dict`` or ``model``."""
    try:
        loaded = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises several types for corrupt or unsafe pickles
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({err})") from err
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise CheckpointError(
            f"{path}: expected a state dict of tensors, got {type(loaded).__name__}"
        )
    return loaded


def import_original(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    n_heads: int = PAPER_N_HEADS,
    behaviour_cloning: bool = False,
    overwrite: bool = False,
) -> ImportReport:
    """Convert an original DT checkpoint file into a checkpoint directory of ours, after
    checking that the converted model loads and runs.

    Raises:
        FileNotFoundError, CheckpointError, FileExistsError: see the functions it calls.
    """
    from atari_dt.model.hooked_dt import HookedDecisionTransformer

    ours, report = convert_original_state_dict(
        load_original_checkpoint(checkpoint), n_heads=n_heads, behaviour_cloning=behaviour_cloning
    )
    model = HookedDecisionTransformer(report.config)
    check_state_dict(ours, model.state_dict(), source=f"{checkpoint} (converted)")
    model.load_state_dict(ours, strict=True)
    metadata = {
        "imported_from": str(checkpoint),
        "inferred": report.inferred,
        "assumed": report.assumed,
        "ignored": report.ignored,
    }
    model.save_pretrained(out_dir, metadata=metadata, overwrite=overwrite)
    return report


def _strip_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix of a DataParallel/DDP checkpoint."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _require(sd: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"original DT checkpoint: key {key!r} is missing")
    return sd[key]


def _infer_config(
    sd: dict[str, torch.Tensor], n_heads: int, behaviour_cloning: bool, dropout: float
) -> tuple[ModelConfig, dict[str, Any]]:
    pos = _require(sd, "pos_emb")
    if pos.ndim != 3 or (pos.shape[1] - 1) % 3:
        raise CheckpointError(f"pos_emb has shape {list(pos.shape)}, expected (1, 3T+1, d)")
    global_pos = _require(sd, "global_pos_emb")
    if global_pos.ndim != 3 or global_pos.shape[2] != pos.shape[2]:
        raise CheckpointError(
            f"global_pos_emb has shape {list(global_pos.shape)}, expected "
            f"(1, max_timestep+1, {pos.shape[2]})"
        )
    if not behaviour_cloning and "ret_emb.0.weight" not in sd:
        raise CheckpointError(
            "original DT checkpoint: 'ret_emb.0.weight' is missing; if it is a behaviour-cloning "
            "('naive') model, import it with behaviour_cloning=True (--behaviour-cloning)"
        )
    head = _require(sd, "head.weight")
    layers = {int(m.group(1)) for k in sd if (m := _BLOCK.match(k))}
    if layers != set(range(len(layers))) or not layers:
        raise CheckpointError(f"original DT checkpoint: blocks {sorted(layers)} are not 0..n-1")
    inferred = {
        "d_model": (int(pos.shape[2]), "pos_emb"),
        "context_len": ((pos.shape[1] - 1) // 3, "pos_emb: 3T+1 rows"),
        "max_timestep": (int(global_pos.shape[1]), "global_pos_emb rows"),
        "n_layers": (len(layers), "blocks.{i}"),
        "n_actions": (int(head.shape[0]), "head.weight"),
    }
    values = {name: value for name, (value, _) in inferred.items()}
    try:
        cfg = ModelConfig(
            **values,
            n_heads=n_heads,
            dropout=dropout,
            positional="original",
            rtg_scale=1.0,
            behaviour_cloning=behaviour_cloning,
        )
    except ValueError as err:
        raise CheckpointError(f"original DT checkpoint: {err}") from err
    return cfg, {name: {"value": v, "from": source} for name, (v, source) in inferred.items()}


def _convert_key(key: str, tensor: torch.Tensor, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our tensors for one original key (empty dict never: unknown keys raise)."""
    H, e, d = cfg.n_heads, cfg.d_head, cfg.d_model
    if (m := _BLOCK.match(key)) is not None:
        return _convert_block_key(f"blocks.{m.group(1)}.", key[m.end() :], tensor, H, e, d)
    direct = {
        "ret_emb.0.weight": "rtg_embed.weight",
        "ret_emb.0.bias": "rtg_embed.bias",
        "action_embeddings.0.weight": "action_embed.weight",
        "ln_f.weight": "ln_final.w",
        "ln_f.bias": "ln_final.b",
    }
    encoder = {
        "state_encoder.0": "conv0",
        "state_encoder.2": "conv1",
        "state_encoder.4": "conv2",
        "state_encoder.7": "linear",
    }
    if key in direct:
        return {direct[key]: tensor}
    if key.rsplit(".", 1)[0] in encoder:
        module, param = key.rsplit(".", 1)
        return {f"encoder.{encoder[module]}.{param}": tensor}
    if key == "pos_emb":
        return {"pos_embed": tensor[0, : cfg.n_ctx]}  # its last row is never used
    if key == "global_pos_emb":
        return {"global_pos_embed": tensor[0]}
    if key == "head.weight":
        return {"W_U": tensor.T, "b_U": torch.zeros(tensor.shape[0])}
    raise CheckpointError(f"original DT checkpoint: unexpected key {key!r}")


def _convert_block_key(
    prefix: str, rest: str, tensor: torch.Tensor, H: int, e: int, d: int
) -> dict[str, torch.Tensor]:
    qkv = {"query": "Q", "key": "K", "value": "V"}
    module, _, param = rest.rpartition(".")
    if param not in ("weight", "bias"):
        raise CheckpointError(f"original DT checkpoint: unexpected key {prefix + rest!r}")
    if module in ("ln1", "ln2"):
        return {f"{prefix}{module}.{'w' if param == 'weight' else 'b'}": tensor}
    if module.startswith("attn.") and module[5:] in qkv:
        letter = qkv[module[5:]]
        # nn.Linear weight [H*e, d]: output unit h*e+i belongs to head h.
        if param == "weight":
            return {f"{prefix}attn.W_{letter}": tensor.view(H, e, d).transpose(1, 2)}
        return {f"{prefix}attn.b_{letter}": tensor.view(H, e)}
    if module == "attn.proj":
        if param == "weight":  # [d, H*e]: input unit h*e+i comes from head h
            return {f"{prefix}attn.W_O": tensor.T.reshape(H, e, d)}
        return {f"{prefix}attn.b_O": tensor}
    if module in ("mlp.0", "mlp.2"):
        which = "in" if module == "mlp.0" else "out"
        if param == "weight":  # nn.Linear [out, in] -> ours [in, out]
            return {f"{prefix}mlp.W_{which}": tensor.T}
        return {f"{prefix}mlp.b_{which}": tensor}
    raise CheckpointError(f"original DT checkpoint: unexpected key {prefix + rest!r}")
