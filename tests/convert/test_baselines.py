"""The sliding-window + sinks teacher baseline."""

import pytest
import torch

from convert_teachers import make_teacher  # noqa: F401  (fixtures)
from gsa.convert.baselines import sink_window_logits, sink_window_mask


def test_mask_rule():
    allowed, pos = sink_window_mask(torch.tensor([[0, 1, 1, 1, 1, 1, 1]]), window=2, sinks=1)
    a = allowed[0, 0]
    assert pos.tolist() == [[0, 0, 1, 2, 3, 4, 5]]
    # query 6 (real index 5) reads real indices 4, 5 (window) and 0 (sink, position 1 in the row)
    assert a[6].nonzero().flatten().tolist() == [1, 5, 6]
    assert a[0].nonzero().flatten().tolist() == [0]  # a padded query reads itself only
    assert not a[:, 0][1:].any()  # nobody reads the pad
    with pytest.raises(ValueError, match="window"):
        sink_window_mask(torch.ones(1, 3), window=0, sinks=1)


def test_wide_window_is_the_teacher(make_teacher):
    teacher = make_teacher("llama")
    ids = torch.randint(3, 97, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(sink_window_logits(teacher, ids, window=10, sinks=0), teacher(ids).logits)


def test_window_and_sinks_limit_what_is_read(make_teacher):
    teacher = make_teacher("qwen2", num_hidden_layers=1)  # one layer: the receptive field is the window itself
    ids = torch.randint(3, 97, (1, 16))
    with torch.no_grad():
        base = sink_window_logits(teacher, ids, window=4, sinks=2)
        middle = ids.clone()
        middle[0, 5] = 7 if ids[0, 5] != 7 else 8
        out = sink_window_logits(teacher, middle, window=4, sinks=2)
        torch.testing.assert_close(out[:, 9:], base[:, 9:], rtol=0, atol=0)  # outside every later window
        assert not torch.allclose(out[:, 5:9], base[:, 5:9])
        sink = ids.clone()
        sink[0, 1] = 7 if ids[0, 1] != 7 else 8
        assert not torch.allclose(sink_window_logits(teacher, sink, window=4, sinks=2)[:, -1], base[:, -1])


def test_left_padding_matches_the_unpadded_row(make_teacher):
    teacher = make_teacher("llama")
    ids = torch.randint(3, 97, (1, 9))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], 1)
    with torch.no_grad():
        want = sink_window_logits(teacher, ids, window=3, sinks=2)
        got = sink_window_logits(teacher, padded, mask, window=3, sinks=2)[:, 3:]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_hybrid_student_starts_as_the_window_baseline(make_teacher, arch):
    """A student converted with window W and S sinks and its slot memory's share at zero (as conversion leaves it)
    computes the teacher's sink-window logits: the same RoPE, window, sinks, grouped heads and biases, written
    independently (gsa.nn.window vs a mask over the teacher's own attention). Then the slots take part."""
    from gsa.convert import from_pretrained_transformer

    teacher = make_teacher(arch, rope_parameters={"rope_type": "default", "rope_theta": 300.0}).float()
    student = from_pretrained_transformer(teacher, window_size=4, num_sink_tokens=2)
    assert student.config.rope_theta == 300.0  # not the default 10000: the teacher's base is carried over
    ids = torch.randint(3, 97, (2, 15))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad():
        want = sink_window_logits(teacher, ids, mask, window=4, sinks=2)
        got = student(ids, attention_mask=mask).logits
        real = mask.bool()
        torch.testing.assert_close(got[real], want[real], rtol=1e-4, atol=1e-4)
        for block in student.model.layers:
            block.attn.memory_scale.fill_(1.0)
        assert not torch.allclose(student(ids, attention_mask=mask).logits[real], want[real], atol=1e-2)
