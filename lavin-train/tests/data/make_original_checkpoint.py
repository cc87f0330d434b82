"""Build `original-checkpoint-1.pth`: a checkpoint shaped like the original LaVIN's
`save_model` output ({'model', 'optimizer', 'epoch', 'scaler', 'args'}, args an
argparse.Namespace) from the parity fixture's adapter checkpoint, without PyTorch.

Run from the repo root: python3 lavin-train/tests/data/make_original_checkpoint.py
"""
import argparse, io, pickle, sys, types, zipfile

SRC = "tests/data/parity/tiny-a/adapter/checkpoint.pth"
DST = "lavin-train/tests/data/original-checkpoint-1.pth"

torch = types.ModuleType("torch"); utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch; sys.modules["torch._utils"] = utils
class FloatStorage: pass
FloatStorage.__module__ = "torch"; torch.FloatStorage = FloatStorage
def _rebuild_tensor_v2(*a): return Tensor(a)
_rebuild_tensor_v2.__module__ = "torch._utils"; utils._rebuild_tensor_v2 = _rebuild_tensor_v2
class Storage:
    def __init__(self, pid): self.pid = pid
class Tensor:
    def __init__(self, args): self.args = args
    def __reduce__(self): return (_rebuild_tensor_v2, self.args)

class In(pickle.Unpickler):
    def find_class(self, mod, name):
        if mod == "torch._utils" and name == "_rebuild_tensor_v2": return _rebuild_tensor_v2
        if mod == "torch" and name == "FloatStorage": return FloatStorage
        if mod == "collections" and name == "OrderedDict":
            import collections; return collections.OrderedDict
        raise RuntimeError(f"{mod}.{name}")
    def persistent_load(self, pid): return Storage(pid)

class Out(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, Storage) else None

zin = zipfile.ZipFile(SRC)
prefix = zin.namelist()[0].split("/")[0]
top = In(io.BytesIO(zin.read(f"{prefix}/data.pkl"))).load()
model = top["model"]
first = next(iter(model.values()))
args = argparse.Namespace(batch_size=4, accum_iter=2, epochs=20, warmup_epochs=2, blr=9e-3,
                          weight_decay=0.02, adapter_type="attn", adapter_dim=8,
                          temperature=10.0, prompt_format="CQM-A", output_dir="./out")
ckpt = {
    "model": {("module." + k): v for k, v in model.items()},
    "optimizer": {"state": {0: {"state1": first, "step": 10}}, "param_groups": [{"lr": 1e-3}]},
    "epoch": 1,
    "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
    "args": args,
}
buf = io.BytesIO(); Out(buf, protocol=2).dump(ckpt)
with zipfile.ZipFile(DST, "w", zipfile.ZIP_STORED) as z:
    for n in zin.namelist():
        new = n.replace(prefix + "/", "checkpoint-1/", 1)
        z.writestr(new, buf.getvalue() if n.endswith("data.pkl") else zin.read(n))
print("wrote", DST)
