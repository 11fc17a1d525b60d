"""Request semantics of Predict, Classify, Regress and MultiInference, as TF Serving has them.

Pure and synchronous: validate a request against a signature and turn it into
a :class:`Plan` (graph tensors to feed and fetch), then turn the fetched arrays
back into results. No I/O and no TensorFlow here; :mod:`aserve.service` runs
plans in the worker pool, and model warm-up replays them in the load thread.
Error texts and codes are TF Serving's (``predict_util.cc``, ``classifier.cc``,
``regressor.cc``, ``multi_inference.cc``, ``servables/tensorflow/util.cc``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np

from aserve import tensors
from aserve.errors import Code, ServingError, invalid_argument
from aserve.signatures import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    PREDICT_METHOD,
    REGRESS_METHOD,
    Signature,
)

CLASSIFY_INPUTS = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"


class Plan:
    """One session run: graph tensors to feed and to fetch, and the aliases of the fetches.

    Made per request, so a plain class with read-only (``Final``) attributes: compiled, a
    dataclass's generated ``__init__`` still runs in the interpreter (~1.2 µs, against
    ~0.1 µs here).
    """

    __slots__ = ("feeds", "fetches", "aliases")

    def __init__(
        self, feeds: Mapping[str, np.ndarray], fetches: tuple[str, ...], aliases: tuple[str, ...]
    ) -> None:
        self.feeds: Final = feeds
        self.fetches: Final = fetches
        self.aliases: Final = aliases

    def outputs(self, results: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        aliases = self.aliases  # indexed: zip(..., strict=True) parses its keyword per call
        if len(results) != len(aliases):
            raise ValueError(f"{len(results)} results for {len(aliases)} outputs")
        return {aliases[i]: results[i] for i in range(len(aliases))}


def signature_name(name: str) -> str:
    return name or DEFAULT_SIGNATURE


# -- Predict ---------------------------------------------------------------------------------


def predict_signature(signatures: Mapping[str, Signature], name: str) -> Signature:
    signature = signatures.get(signature_name(name))
    if signature is None:
        raise missing_predict_signature(signature_name(name))
    return signature


def missing_predict_signature(name: str) -> ServingError:
    """TF Serving's Predict answer for a signature the model lacks."""
    return ServingError(Code.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')


def plan_predict(
    signature: Signature,
    inputs: Mapping[str, np.ndarray],
    output_filter: Sequence[str] = (),
    *,
    check_method_name: bool = False,
) -> Plan:
    if check_method_name and signature.method_name not in (
        PREDICT_METHOD,
        CLASSIFY_METHOD,
        REGRESS_METHOD,
    ):
        raise ServingError(
            Code.INTERNAL,
            "Expected prediction signature method_name to be one of "
            f"{{{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. "
            f"Was: {signature.method_name}",
        )
    _check_input_count(signature, inputs)
    feeds = _feeds(signature, inputs)
    if not output_filter:  # all outputs, as the signature lists them
        return Plan(feeds, signature.fetches, signature.aliases)
    aliases = _output_aliases(signature, output_filter)
    fetches = tuple(signature.outputs[a].name for a in aliases)
    return Plan(feeds, fetches, aliases)


def _check_input_count(signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    sent, wanted = len(inputs), len(signature.inputs)
    if sent > wanted or (sent < wanted and not signature.defaults):
        extra = sorted(set(inputs) - set(signature.inputs))
        missing = sorted(set(signature.inputs) - set(inputs))
        raise invalid_argument(
            f"input size does not match signature: {sent}!={wanted} "
            f"len({{{','.join(sorted(inputs))}}}) != len({{{','.join(signature.inputs)}}}). "
            f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
        )


def _feeds(signature: Signature, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    feeds = {}
    named = 0  # inputs the signature has
    for index, (alias, spec) in enumerate(signature.inputs.items()):
        array = inputs.get(alias)
        if array is None:
            array = _default(signature, alias, inputs)
        else:
            named += 1
        actual = tensors.dtype_of(array)
        if actual != spec.dtype:
            raise invalid_argument(
                f"Expects arg[{index}] to be {tensors.dtype_name(spec.dtype)} but "
                f"{tensors.dtype_name(actual)} is provided"
            )
        feeds[spec.name] = array
    if named < len(inputs):
        used = sorted(set(inputs) & set(signature.inputs))
        raise invalid_argument(
            f"Inputs contains invalid name. Used request inputs: {','.join(used)}, "
            f"request input: {','.join(sorted(inputs))}"
        )
    return feeds


def _default(signature: Signature, alias: str, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    default = signature.defaults.get(alias)
    if default is None:
        spec = signature.inputs[alias]
        raise invalid_argument(
            f"Signature input alias: {alias}(feed name: {spec.name}) not found in request and "
            f"no default value provided. Inputs expected to be in the request "
            f"{{{','.join(sorted(inputs))}}}, or default input alias set: "
            f"{','.join(sorted(signature.defaults))}"
        )
    return tensors.array_from_proto(default)


def _output_aliases(signature: Signature, output_filter: Sequence[str]) -> tuple[str, ...]:
    if not output_filter:
        return tuple(signature.outputs)
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(signature.outputs)}}}."
            )
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return tuple(output_filter)


# -- Classify and Regress --------------------------------------------------------------------


def examples_signature(
    signatures: Mapping[str, Signature],
    name: str,
    method: str,
    *,
    check_method_name: bool = False,
) -> Signature:
    """The signature a Classify (``method`` = CLASSIFY_METHOD) or Regress request names."""
    signature = _named_signature(signatures, name)
    kind, check_io = _EXAMPLE_METHODS[method]
    if check_method_name and signature.method_name != method:
        raise invalid_argument(
            f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}"
        )
    check_io(signature)
    return signature


def _named_signature(signatures: Mapping[str, Signature], name: str) -> Signature:
    signature = signatures.get(signature_name(name))
    if signature is None:
        raise invalid_argument(f"No signature was found with the name: {signature_name(name)}")
    return signature


def _classification_io(signature: Signature) -> tuple[str, tuple[str, ...]]:
    """(input alias, output aliases among classes/scores) or TF's error."""
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(
            f"Expected one or two output Tensors, found {len(signature.outputs)}"
        )
    if CLASSIFY_INPUTS not in signature.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {signature.proto}")
    outputs = tuple(a for a in (CLASSIFY_CLASSES, CLASSIFY_SCORES) if a in signature.outputs)
    if not outputs:
        raise invalid_argument(
            f'Expected classification signature outputs to contain at least one of "classes" '
            f'or "scores". Signature was: {signature.proto}'
        )
    return CLASSIFY_INPUTS, outputs


def _regression_io(signature: Signature) -> tuple[str, tuple[str, ...]]:
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if REGRESS_INPUTS not in signature.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {signature.proto}")
    if REGRESS_OUTPUTS not in signature.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {signature.proto}")
    return REGRESS_INPUTS, (REGRESS_OUTPUTS,)


_EXAMPLE_METHODS = {
    CLASSIFY_METHOD: ("classification", _classification_io),
    REGRESS_METHOD: ("regression", _regression_io),
}


def serialized_examples(input: Any) -> np.ndarray:
    """An ``Input`` proto -> 1-D object array of serialized tf.Examples (context merged in)."""
    kind = input.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in input.example_list.examples]
    elif kind == "example_list_with_context":
        context = input.example_list_with_context.context.SerializeToString()
        examples = [
            context + e.SerializeToString() for e in input.example_list_with_context.examples
        ]
    else:
        examples = []
    if not examples:
        raise invalid_argument("Input is empty.")
    array = np.empty(len(examples), dtype=object)
    array[:] = examples
    return array


def plan_examples(
    signatures: Sequence[Signature], examples: np.ndarray, *, classify: Sequence[bool]
) -> Plan:
    """Feed ``examples`` to the input of every signature; fetch the union of their outputs."""
    feeds: dict[str, np.ndarray] = {}
    fetches: dict[str, str] = {}
    for signature, is_classify in zip(signatures, classify, strict=True):
        input_alias, output_aliases = (
            _classification_io(signature) if is_classify else _regression_io(signature)
        )
        feeds[signature.inputs[input_alias].name] = examples
        for alias in output_aliases:
            fetches.setdefault(signature.outputs[alias].name, alias)
    names = tuple(sorted(fetches))
    return Plan(feeds, names, names)  # results are keyed by graph tensor name


def classification_result(
    signature: Signature, results: Mapping[str, np.ndarray], num_examples: int
) -> Any:
    from tensorflow_serving.apis import classification_pb2

    classes = _fetched(signature, CLASSIFY_CLASSES, results)
    scores = _fetched(signature, CLASSIFY_SCORES, results)
    for name, tensor in (("classes", classes), ("scores", scores)):
        if tensor is not None:
            _check_class_tensor(name, tensor, num_examples)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            "Tensors class and score should match in dim_size(1). "
            f"Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    num_classes = (classes if classes is not None else scores).shape[1]  # type: ignore[union-attr]
    result = classification_pb2.ClassificationResult()
    for i in range(num_examples):
        classifications = result.classifications.add()
        for c in range(num_classes):
            cls = classifications.classes.add()
            if classes is not None:
                label = classes[i, c]
                cls.label = (
                    label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
                )
            if scores is not None:
                cls.score = float(scores[i, c])
    return result


def _check_class_tensor(name: str, tensor: np.ndarray, num_examples: int) -> None:
    if tensor.ndim != 2:
        raise invalid_argument(
            f"Expected Tensor shape: [batch_size num_classes] but got {_shape(tensor)}"
        )
    wanted, actual = "DT_STRING" if name == "classes" else "DT_FLOAT", _dtype_enum_name(tensor)
    if actual != wanted:
        raise invalid_argument(f"Expected {name} Tensor of {wanted}. Got: {actual}")
    if tensor.shape[0] != num_examples:
        raise invalid_argument(
            f"Expected {name} output batch size of {num_examples}. Got: {tensor.shape[0]}"
        )


def regression_result(
    signature: Signature, results: Mapping[str, np.ndarray], num_examples: int
) -> Any:
    from tensorflow_serving.apis import regression_pb2

    output = _fetched(signature, REGRESS_OUTPUTS, results)
    if output is None:
        raise invalid_argument(
            f"Could not find output tensor '{signature.outputs[REGRESS_OUTPUTS].name}'"
        )
    if not (output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)):
        raise invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            f"but got {_shape(output)}"
        )
    if output.shape[0] != num_examples:
        raise invalid_argument(
            "Input batch size did not match output batch size: "
            f"{num_examples} vs. {output.shape[0]}"
        )
    if output.dtype != np.float32:
        raise invalid_argument(
            f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_enum_name(output)}"
        )
    result = regression_pb2.RegressionResult()
    for value in output.reshape(-1).tolist():
        result.regressions.add().value = value
    return result


def _fetched(
    signature: Signature, alias: str, results: Mapping[str, np.ndarray]
) -> np.ndarray | None:
    spec = signature.outputs.get(alias)
    return None if spec is None else results.get(spec.name)


def _dtype_enum_name(array: np.ndarray) -> str:
    return "DT_" + tensors.dtype_name(tensors.dtype_of(array)).upper()


def _shape(array: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def check_multi_inference_models(names: Sequence[str]) -> None:
    """Every task of a MultiInference request names the same, non-empty model."""
    for name in names:
        if not name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if name != names[0]:
            raise invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )


# -- jobs: a request ready to run ------------------------------------------------------------


class Job:
    """A validated request: the session run to make, and how to turn its results into the answer.

    The service runs ``plan`` in the worker pool; model warm-up runs it in the load thread::

        job = examples_job(model.signatures, "", CLASSIFY_METHOD, input)
        answer = job.finish(model.run(job.plan.feeds, job.plan.fetches))

    Made per request: a plain class, as :class:`Plan` is.
    """

    __slots__ = ("plan", "finish", "examples")

    def __init__(
        self, plan: Plan, finish: Callable[[Sequence[np.ndarray]], Any], examples: int = 0
    ) -> None:
        self.plan: Final = plan
        self.finish: Final = finish
        self.examples: Final = examples  # tf.Examples in the request (Classify, Regress, ...)


def predict_job(
    signature: Signature,
    inputs: Mapping[str, np.ndarray],
    output_filter: Sequence[str] = (),
    *,
    check_method_name: bool = False,
) -> Job:
    plan = plan_predict(signature, inputs, output_filter, check_method_name=check_method_name)
    return Job(plan, plan.outputs)


def examples_job(
    signatures: Mapping[str, Signature],
    name: str,
    method: str,
    input: Any,
    *,
    check_method_name: bool = False,
) -> Job:
    """A Classify or Regress request (``method``); its answer is the result proto."""
    signature = examples_signature(signatures, name, method, check_method_name=check_method_name)
    return _examples_job([signature], [method == CLASSIFY_METHOD], serialized_examples(input))


def multi_inference_job(
    signatures: Mapping[str, Signature], tasks: Sequence[tuple[str, str]], input: Any
) -> Job:
    """``tasks`` = (signature name, method name) pairs; the job's answer lists results in order."""
    chosen: list[Signature] = []
    for name, method in tasks:
        name = signature_name(name)
        if name in (s.name for s in chosen):
            raise invalid_argument(f"Duplicate evaluation of signature: {name}")
        signature = signatures.get(name)
        if signature is None:
            raise invalid_argument(f"Requested signature not found in model graph: {name}")
        if method not in (CLASSIFY_METHOD, REGRESS_METHOD):
            raise ServingError(Code.UNIMPLEMENTED, f"Unsupported signature method_name: {method}")
        chosen.append(signature)
    classify = [method == CLASSIFY_METHOD for _, method in tasks]
    return _examples_job(chosen, classify, serialized_examples(input), many=True)


def _examples_job(
    signatures: Sequence[Signature],
    classify: Sequence[bool],
    examples: np.ndarray,
    *,
    many: bool = False,
) -> Job:
    plan = plan_examples(signatures, examples, classify=classify)

    def finish(results: Sequence[np.ndarray]) -> Any:
        by_name = plan.outputs(results)
        answers = [
            (classification_result if c else regression_result)(s, by_name, len(examples))
            for s, c in zip(signatures, classify, strict=True)
        ]
        return answers if many else answers[0]

    return Job(plan, finish, examples=len(examples))
