"""Old import path of :mod:`nni_topo_pruner.bmvc.synthetic` (the BMVC paper's code lives in
``nni_topo_pruner/bmvc/``): this name *is* that module, so existing imports, pickles and
monkeypatches keep working."""
import sys

from .bmvc import synthetic

sys.modules[__name__] = synthetic
