"""The script adapters' logging helper: output captured, failures logged, wall time and peak memory recorded."""

import logging

import pytest

from lensinfer.workflow import logged


def test_logged_captures_output_and_records_time_and_memory(tmp_path):
    log = tmp_path / "sub" / "job.log"
    with logged(log) as logger:
        print("hello from the job")
        logger.info("library message")
    text = log.read_text()
    assert "hello from the job" in text and "library message" in text
    assert "wall time" in text and "peak RSS" in text and text.rstrip().endswith("MB")


def test_logged_records_failure_with_traceback(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(ValueError):
        with logged(log):
            raise ValueError("bad shard index")
    text = log.read_text()
    assert "failed" in text and "ValueError: bad shard index" in text and "peak RSS" in text
    assert not any(isinstance(h, logging.StreamHandler) and getattr(h.stream, "name", "") == str(log)
                   for h in logging.getLogger().handlers)
