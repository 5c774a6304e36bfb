"""What commands print: short, rounded numbers."""

from __future__ import annotations

from explore_instruct.cli.modeling import train_summary


def test_train_summary_rounds_the_losses():
    settings = {
        "num_examples": 40,
        "precision": "fp32",
        "batch": {
            "effective_global_batch_size": 8,
            "layout": "packed",
            "gradient_accumulation_steps": 2,
            "world_size": 1,
        },
        "result": {
            "global_steps": 12,
            "seconds": 3.25,
            "first_loss": 2.718281828459045,
            "last_loss": 0.1234567,
            "tokens_per_second": 1234.5678,
            "padding_fraction": 0.00712,
        },
    }
    line = train_summary(settings)
    assert "loss 2.7183 -> 0.1235; 1235 tokens/s, 0.7 % padding" in line
    assert "12 steps in 3.25s" in line
    settings["result"]["first_loss"] = None  # no step logged a loss
    assert "loss n/a -> 0.1235" in train_summary(settings)
