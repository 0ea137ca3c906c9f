"""Real data with a checkpoint's own image processor (``data.transform.processor``, set by
``model=clip``): evaluation images equal the processor's output; training uses its size, mean,
std and interpolation; a missing processor file is one line naming the key."""

import pytest
from PIL import Image
from transformers import CLIPImageProcessor, SiglipImageProcessor

from mmresearch.data.image_text import ImageTextDataModule
from mmresearch.data.transforms import processor_image_config
from mmresearch.utils.errors import ConfigError

from real_fixtures import captions_for, tiny_tokenizer, write_csv, write_images

PROCESSORS = {
    # CLIP: shortest side to 40, centre crop 32 (crop_pct 0.8), OpenAI's mean/std, bicubic
    "clip": lambda: CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}),
    # SigLIP: squash to 32x32, mean/std 0.5, bicubic
    "siglip": lambda: SiglipImageProcessor(size={"height": 32, "width": 32}),
}


@pytest.fixture(params=sorted(PROCESSORS))
def processor_dir(request, tmp_path):
    processor = PROCESSORS[request.param]()
    processor.save_pretrained(str(tmp_path / "ckpt"))
    return request.param, processor, tmp_path / "ckpt"


def _module(tmp_path, processor_dir, **kwargs):
    names = write_images(tmp_path / "images", 8, size=(61, 45))  # not square, odd sizes: crop offsets matter
    path = write_csv(tmp_path / "captions.csv", captions_for(names, 2))
    return ImageTextDataModule(tiny_tokenizer(), train={"format": "csv", "path": str(path), "image_root": str(tmp_path / "images")},
                               split={"val": 2, "test": 2, "seed": 0}, transform={"processor": str(processor_dir)}, batch_size=2,
                               eval_batch_size=2, num_workers=0, **kwargs), tmp_path / "images"


def test_evaluation_images_are_the_processors_output(processor_dir, tmp_path):
    kind, processor, directory = processor_dir
    dm, _ = _module(tmp_path, directory)
    dm.setup()
    got = dm.test_dataset[0]["image"]
    want = processor(images=Image.open(dm.test_dataset.paths[0]).convert("RGB"), return_tensors="pt")["pixel_values"][0]
    assert got.shape == (3, 32, 32)
    assert float((got - want).abs().max()) <= 1e-3


def test_training_uses_the_processors_size_and_statistics(processor_dir, tmp_path):
    kind, processor, directory = processor_dir
    config = processor_image_config(str(directory))
    assert config.image_size == 32 and config.interpolation == "bicubic"
    assert config.mean == pytest.approx(tuple(processor.image_mean)) and config.std == pytest.approx(tuple(processor.image_std))
    assert config.crop_pct == pytest.approx(0.8 if kind == "clip" else 1.0)
    dm, _ = _module(tmp_path, directory)
    dm.setup()
    assert next(iter(dm.train_dataloader())).images.shape == (2, 3, 32, 32)
    with pytest.raises(ConfigError, match=r"data\.image_size=64 but the processor"):
        _module(tmp_path, directory, image_size=64)


def test_a_missing_processor_file_names_the_key(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"data\.transform\.processor=.*empty' has no image processor \(preprocessor_config\.json\)"):
        processor_image_config(str(tmp_path / "empty"))
