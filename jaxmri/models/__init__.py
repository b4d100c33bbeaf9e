"""The paper's networks, as Flax NNX modules (NHWC float32 images in [0, 1] in, logits out).

- ``SmallCNN`` (Table 2, ``small_cnn.py``): the from-scratch classifier.
- ``VGG19Classifier`` (Section 2.2, ``vgg19.py``): torchvision's VGG19, frozen, with a new 2-way head;
  ``jaxmri.weights.load_vgg19`` fills it with ImageNet weights.
- ``UNet`` (Table 5, corrected; ``unet.py``): the segmentation network.
- ``ResCNN`` (``res_cnn.py``): our from-scratch recipe (residual blocks, batch norm, global pooling), not the paper's.
- ``layers.py``: the pooling, normalisation and upsampling they share; ``count_params``.
- ``conv_pool.py``: SmallCNN's first convolution, ReLU and pool as one blocked convolution (CPU speed).
- ``winograd.py``: a 3x3 convolution as Winograd F(2x2, 3x3), what VGG19's wide layers run on CPU.

    >>> from jaxmri.models import SmallCNN, UNet, count_params   # doctest: +SKIP
"""

from jaxmri.models.params import count_params
from jaxmri.models.res_cnn import ResCNN
from jaxmri.models.small_cnn import SmallCNN
from jaxmri.models.unet import UNet
from jaxmri.models.vgg19 import VGG19Classifier

__all__ = ["ResCNN", "SmallCNN", "UNet", "VGG19Classifier", "count_params"]
