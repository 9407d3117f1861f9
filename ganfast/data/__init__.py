"""Datasets for GAN training: Fashion-MNIST (full files or the subset shipped in the package),
folders and zip archives of images, .npz arrays; and an endless, resumable, rank-sharded
batch stream.

    from ganfast.data import open_dataset, batch_iterator
    dataset = open_dataset("fashion-mnist", resolution=32)       # or a folder, a .zip, a .npz
    batches = batch_iterator(dataset, batch_size=64, seed=0, start=cur_nimg)
    images, labels = next(batches)   # float32 [64, 1, 32, 32] in [-1, 1], int64 [64]

Items are (image float32 [C, R, R] in [-1, 1], label int64 scalar; -1 when num_classes == 0).
Nothing is ever downloaded. See datasets.py, sampler.py and fashion_mnist.py for the details;
img2img.py for the image-to-image translation sets (open_img2img_data: paired, unpaired, sr).
"""
from .datasets import (IMAGE_EXTENSIONS, FashionMNIST, ImageDataset, ImageFolder, InMemoryImages, NpzImages,
                       ZipImages, open_dataset, resize_center_crop, uint8_to_float)
from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, make_fashion_mnist_subset, read_idx
from .img2img import (FMNIST_CLASS_ALIASES, FMNIST_CLASS_NAMES, IMG2IMG_TASKS, PAIRING_SEED, Edges2FashionMNIST,
                      FashionMNISTDomains, PairedImageFolder, PairedImages, UnpairedImageFolder, UnpairedImages,
                      bicubic_downsample, bicubic_upsample, fmnist_class_index, fmnist_edges, open_img2img_data)
from .sampler import InfiniteSampler, batch_iterator

__all__ = [
    "open_dataset", "batch_iterator", "InfiniteSampler",
    "ImageDataset", "InMemoryImages", "FashionMNIST", "ImageFolder", "ZipImages", "NpzImages",
    "FASHION_MNIST_CLASSES", "load_fashion_mnist", "read_idx", "make_fashion_mnist_subset",
    "IMAGE_EXTENSIONS", "resize_center_crop", "uint8_to_float",
    # image-to-image translation (img2img.py)
    "open_img2img_data", "PairedImages", "UnpairedImages", "Edges2FashionMNIST", "FashionMNISTDomains",
    "PairedImageFolder", "UnpairedImageFolder", "fmnist_edges", "fmnist_class_index", "bicubic_downsample",
    "bicubic_upsample", "FMNIST_CLASS_NAMES", "FMNIST_CLASS_ALIASES", "PAIRING_SEED", "IMG2IMG_TASKS",
]
