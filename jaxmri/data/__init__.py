"""Everything between a folder of MRI files and a batch on the device (paper Section 2.1, 3.1).

In pipeline order:

==============  ================================================================================
``images``      read and check one file, any mode, into uint8 RGB (``read_image``)
``crop``        the brain's bounding box and the crop + resize (``brain_box``, ``crop_resize``)
``duplicates``  byte-identical and perceptual near-duplicate groups
``dataset``     a whole class-folder set, validated first, cropped and cached (``load_image_folder``)
``phantom``     the synthetic phantom set: the default data and the test fixture
``source``      the user's folder or the phantom, and the split a run uses
``split``       grouped, stratified train / val / test split (Table 1)
``masks``       tumor masks from COCO, Labelbox or PNG files (Section 3.1)
``batching``    fixed-size, padded batches (one compile per step)
``augment``     flip, rotation and blur on the device (inside the jitted train steps)
==============  ================================================================================
"""

from jaxmri.data.crop import brain_box, crop_resize
from jaxmri.data.dataset import ImageSet, load_image_folder
from jaxmri.data.images import read_image
from jaxmri.data.masks import load_masks
from jaxmri.data.phantom import make_phantom, write_phantom_dataset
from jaxmri.data.split import grouped_stratified_split

__all__ = ["ImageSet", "brain_box", "crop_resize", "grouped_stratified_split", "load_image_folder", "load_masks",
           "make_phantom", "read_image", "write_phantom_dataset"]
