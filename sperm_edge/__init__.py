"""sperm-edge: attention-guided sperm morphology classification, from training to the bench."""

import os

__version__ = "0.1.0"

# The most pixels an image file may decode to (100 megapixels, a 10,000 x 10,000 field; OpenCV's own default is
# a gigapixel, 3 GB of RGB): a file claiming more is refused before its pixels are allocated. OpenCV reads this
# when it is first imported, so it is set here, before any module of the package imports cv2; a deployment can
# set the variable itself to change it.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(100_000_000))
