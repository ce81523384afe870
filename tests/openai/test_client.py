"""The official OpenAI Python client against hub's gateway (SPEC section 11).

What real clients do, through `OpenAI(base_url=HUB_URL + "/v1")`: list models, chat and text
completions (streamed too), embeddings, the Responses API (streamed too), audio transcriptions,
and the errors they branch on. The built-in worker answers deterministically, so a stream must
join to the non-streamed answer for the same request.

Run by the Rust test `tests/it/openai.rs` (`scripts/test-real` installs the client), with:
  HUB_URL         the daemon's base URL (no /v1)
  HUB_API_KEY     a key the daemon accepts (it runs with HUB_API_KEYS)
  HUB_MODELS      the manifest's models, comma separated, in the order: one `state: loaded`,
                  one `state: running`, one `state: stopped` (started just in time)
  HUB_AUDIO_FILE  a small file to transcribe (made up here if unset)
Needs only the standard library and `openai`.
"""

import os
import unittest

import openai
from openai import OpenAI

HUB_URL = os.environ.get("HUB_URL", "http://127.0.0.1:8000").rstrip("/")
API_KEY = os.environ.get("HUB_API_KEY", "test-key")
MODELS = [m for m in os.environ.get("HUB_MODELS", "alpha,beta,gamma").split(",") if m]
LOADED = MODELS[0]
# A model whose weights are not loaded (or whose worker is not even running) until asked for.
RUNNING = MODELS[1] if len(MODELS) > 1 else LOADED
STOPPED = MODELS[2] if len(MODELS) > 2 else RUNNING


def client(api_key=API_KEY):
    # No retries: a failure shows at once, as what it is; a generous timeout covers a cold
    # start and load.
    return OpenAI(base_url=HUB_URL + "/v1", api_key=api_key, max_retries=0, timeout=60)


def audio_bytes():
    path = os.environ.get("HUB_AUDIO_FILE")
    if path:
        with open(path, "rb") as f:
            return f.read()
    # A WAV header and a little silence: any bytes will do for the built-in worker.
    return b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(64)


CHAT = [{"role": "user", "content": "tell me about the fox"}]


class Models(unittest.TestCase):
    def test_the_list_holds_every_model_of_the_manifest(self):
        ids = {model.id for model in client().models.list()}
        self.assertTrue(set(MODELS) <= ids, f"{MODELS} not all in {sorted(ids)}")


class ChatCompletions(unittest.TestCase):
    def complete(self, model=LOADED):
        answer = client().chat.completions.create(model=model, messages=CHAT, max_tokens=8)
        self.assertEqual(answer.object, "chat.completion")
        content = answer.choices[0].message.content
        self.assertIsInstance(content, str)
        self.assertTrue(content.strip(), answer)
        return content

    def test_an_answer_is_text(self):
        self.complete()

    def test_a_stream_comes_in_pieces_that_join_to_the_answer(self):
        whole = self.complete()
        stream = client().chat.completions.create(
            model=LOADED, messages=CHAT, max_tokens=8, stream=True
        )
        pieces = [
            chunk.choices[0].delta.content
            for chunk in stream
            if chunk.choices and chunk.choices[0].delta.content
        ]
        self.assertGreater(len(pieces), 1, pieces)
        self.assertEqual("".join(pieces), whole)

    def test_a_running_model_is_loaded_just_in_time(self):
        self.complete(RUNNING)

    def test_a_stopped_model_is_started_and_loaded_just_in_time(self):
        self.complete(STOPPED)


class Completions(unittest.TestCase):
    def test_an_answer_and_its_stream_agree(self):
        answer = client().completions.create(model=LOADED, prompt="once upon a time", max_tokens=8)
        text = answer.choices[0].text
        self.assertTrue(text.strip(), answer)
        stream = client().completions.create(
            model=LOADED, prompt="once upon a time", max_tokens=8, stream=True
        )
        self.assertEqual("".join(chunk.choices[0].text for chunk in stream if chunk.choices), text)


class Embeddings(unittest.TestCase):
    def test_a_vector_is_the_same_for_the_same_text(self):
        # The client asks for base64 unless told otherwise, and decodes it.
        first = client().embeddings.create(model=LOADED, input="the lazy dog")
        second = client().embeddings.create(model=LOADED, input="the lazy dog")
        vector = first.data[0].embedding
        self.assertGreater(len(vector), 0)
        self.assertEqual(vector, second.data[0].embedding)
        floats = client().embeddings.create(
            model=LOADED, input="the lazy dog", encoding_format="float"
        )
        self.assertEqual(len(floats.data[0].embedding), len(vector))
        for a, b in zip(floats.data[0].embedding, vector):
            self.assertAlmostEqual(a, b, places=5)

    def test_each_input_of_a_list_has_its_vector(self):
        answer = client().embeddings.create(model=LOADED, input=["one", "two"])
        self.assertEqual([item.index for item in answer.data], [0, 1])
        self.assertNotEqual(answer.data[0].embedding, answer.data[1].embedding)
        self.assertGreater(answer.usage.total_tokens, 0)


class Responses(unittest.TestCase):
    def test_an_answer_has_output_text(self):
        answer = client().responses.create(model=LOADED, input="hello there", max_output_tokens=8)
        self.assertEqual(answer.status, "completed")
        self.assertTrue(answer.output_text.strip(), answer)

    def test_a_stream_sends_the_events_the_client_knows(self):
        whole = client().responses.create(model=LOADED, input="hello there", max_output_tokens=8)
        stream = client().responses.create(
            model=LOADED, input="hello there", max_output_tokens=8, stream=True
        )
        events = list(stream)
        kinds = [event.type for event in events]
        self.assertEqual(kinds[0], "response.created", kinds)
        self.assertEqual(kinds[-1], "response.completed", kinds)
        self.assertIn("response.output_text.done", kinds)
        deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
        self.assertGreater(len(deltas), 1, kinds)
        self.assertEqual("".join(deltas), whole.output_text)
        self.assertEqual(events[-1].response.output_text, whole.output_text)

    def test_the_stream_helper_accumulates_the_answer(self):
        with client().responses.stream(
            model=LOADED, input="hello there", max_output_tokens=8
        ) as stream:
            for _ in stream:
                pass
            final = stream.get_final_response()
        self.assertTrue(final.output_text.strip(), final)


class AudioTranscriptions(unittest.TestCase):
    def test_the_same_file_gives_the_same_text(self):
        audio = audio_bytes()
        first = client().audio.transcriptions.create(model=LOADED, file=("speech.wav", audio))
        self.assertTrue(first.text.strip(), first)
        second = client().audio.transcriptions.create(model=LOADED, file=("speech.wav", audio))
        self.assertEqual(first.text, second.text)
        plain = client().audio.transcriptions.create(
            model=LOADED, file=("speech.wav", audio), response_format="text"
        )
        self.assertEqual(str(plain).strip(), first.text)


class Errors(unittest.TestCase):
    def test_an_unknown_model_is_not_found(self):
        with self.assertRaises(openai.NotFoundError) as caught:
            client().chat.completions.create(model="no-such-model", messages=CHAT, max_tokens=4)
        self.assertEqual(caught.exception.code, "model_not_found")

    def test_a_wrong_key_is_refused(self):
        with self.assertRaises(openai.AuthenticationError) as caught:
            client(api_key="not-" + API_KEY).models.list()
        self.assertEqual(caught.exception.status_code, 401)


if __name__ == "__main__":
    unittest.main()
