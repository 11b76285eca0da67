"""The IterResearch output parser: the shapes real models emit, each recovery, each error."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from workers.agent.parser import ParsedOutput, parse_output

REPORT = "<report>\nFindings: X was founded in 1999 [S1].\n</report>"
SEARCH = '<tool_call>\n{"name": "search", "arguments": {"query": ["x founding year"]}}\n</tool_call>'


def ok(out: ParsedOutput) -> ParsedOutput:
    assert out.error is None, out.error
    return out


# --- The format Tongyi-DeepResearch emits (ReAct tags; IterResearch adds <report>) -----------------


def test_round_with_search_call() -> None:
    out = ok(parse_output(f"<think>\nI should search.\n</think>\n{REPORT}\n{SEARCH}"))
    assert out.think == "I should search."
    assert out.report == "Findings: X was founded in 1999 [S1]."
    assert out.tool_call is not None
    assert out.tool_call.name == "search"
    assert out.tool_call.arguments == {"query": ["x founding year"]}
    assert out.tool_call_text == '{"name": "search", "arguments": {"query": ["x founding year"]}}'
    assert out.answer is None
    assert out.warnings == ()


def test_visit_call() -> None:
    text = (
        "<think>open the page</think>\n<report>r</report>\n<tool_call>\n"
        '{"name": "visit", "arguments": {"url": ["https://example.org/a"], "goal": "founding year"}}\n'
        "</tool_call>"
    )
    call = ok(parse_output(text)).tool_call
    assert call is not None
    assert call.name == "visit"
    assert call.arguments == {"url": ["https://example.org/a"], "goal": "founding year"}


def test_python_interpreter_code_block() -> None:
    text = (
        "<think>compute it</think>\n<report>r</report>\n<tool_call>\n"
        '{"name": "PythonInterpreter", "arguments": {}}\n<code>\nimport math\nprint(math.sqrt(16))\n'
        "</code>\n</tool_call>"
    )
    out = ok(parse_output(text))
    assert out.tool_call is not None
    assert out.tool_call.name == "PythonInterpreter"
    assert out.tool_call.arguments == {"code": "import math\nprint(math.sqrt(16))"}
    assert "<code>" in out.tool_call_text


def test_python_code_keeps_relative_indentation() -> None:
    text = (
        '<report>r</report><tool_call>{"name": "PythonInterpreter", "arguments": {}}\n<code>\n'
        "    for i in range(2):\n        print(i)\n</code></tool_call>"
    )
    call = ok(parse_output(text)).tool_call
    assert call is not None
    assert call.arguments["code"] == "for i in range(2):\n    print(i)"


def test_final_answer() -> None:
    out = ok(parse_output(f"<think>enough evidence</think>\n{REPORT}\n<answer>1999</answer>"))
    assert out.answer == "1999"
    assert out.tool_call is None
    assert out.tool_call_text == ""
    assert out.report is not None


def test_react_output_without_report_keeps_old_report() -> None:
    # The released ReAct model writes no <report>: usable, the agent keeps its previous report.
    out = ok(parse_output(f"<think>\nsearch first\n</think>\n{SEARCH}"))
    assert out.report is None
    assert out.tool_call is not None
    assert any("no <report>" in w for w in out.warnings)


# --- <think> tolerance ----------------------------------------------------------------------------


def test_think_in_reasoning_field() -> None:
    out = ok(parse_output(f"{REPORT}\n{SEARCH}", reasoning="thinking in the side channel"))
    assert out.think == "thinking in the side channel"


def test_think_in_both_places_is_not_duplicated() -> None:
    out = ok(parse_output(f"<think>same</think>{REPORT}{SEARCH}", reasoning="same"))
    assert out.think == "same"


def test_missing_think() -> None:
    out = ok(parse_output(f"{REPORT}\n<answer>42</answer>"))
    assert out.think == ""
    assert out.answer == "42"


def test_only_closing_think_tag() -> None:
    # Reasoning parsers strip the opening tag and leave the closing one.
    out = ok(parse_output(f"the plan is to search\n</think>\n{REPORT}\n{SEARCH}"))
    assert out.think == "the plan is to search"
    assert out.report is not None


def test_unclosed_think_runs_to_next_tag() -> None:
    out = ok(parse_output(f"<think>still thinking\n{REPORT}\n{SEARCH}"))
    assert out.think == "still thinking"
    assert out.report == "Findings: X was founded in 1999 [S1]."
    assert any("unclosed <think>" in w for w in out.warnings)


def test_repeated_think_blocks_are_joined() -> None:
    out = ok(parse_output(f"<think>one</think>{REPORT}<think>two</think>{SEARCH}"))
    assert out.think == "one\n\ntwo"
    assert out.report is not None


def test_duplicated_think_close() -> None:
    out = ok(parse_output(f"<think>a</think></think>{REPORT}<answer>b</answer>"))
    assert out.think == "a"
    assert out.answer == "b"


def test_tags_inside_think_are_not_output() -> None:
    think = "<think>I must not write <answer> yet, nor a <tool_response></think>"
    out = ok(parse_output(f"{think}{REPORT}{SEARCH}"))
    assert out.answer is None
    assert out.tool_call is not None


# --- Stray text, duplicated and unclosed tags -----------------------------------------------------


def test_stray_text_around_tags() -> None:
    text = f"Sure! Here is my round.\n{REPORT}\nNow I will search.\n{SEARCH}\nHope that helps."
    out = ok(parse_output(text))
    assert out.report == "Findings: X was founded in 1999 [S1]."
    assert out.tool_call is not None


def test_tags_are_case_and_space_insensitive() -> None:
    out = ok(parse_output("< Report >r</REPORT>\n<Answer>yes</ answer >"))
    assert out.report == "r"
    assert out.answer == "yes"


def test_duplicated_closing_tags() -> None:
    text = f"<report>r</report></report>{SEARCH}</tool_call>"
    out = ok(parse_output(text))
    assert out.report == "r"
    assert out.tool_call is not None


def test_unclosed_final_answer_taken_to_end() -> None:
    out = ok(parse_output(f"{REPORT}\n<answer>The answer is 1999."))
    assert out.answer == "The answer is 1999."
    assert any("unclosed <answer>" in w for w in out.warnings)


def test_unclosed_report_at_end_with_answer_before() -> None:
    out = ok(parse_output("<answer>1999</answer>\n<report>final notes"))
    assert out.report == "final notes"
    assert out.answer == "1999"


def test_unclosed_report_ends_at_next_tag() -> None:
    out = ok(parse_output(f"<report>findings so far\n{SEARCH}"))
    assert out.report == "findings so far"
    assert out.tool_call is not None


def test_empty_report_is_ignored() -> None:
    out = ok(parse_output(f"<report>  </report>{SEARCH}"))
    assert out.report is None
    assert any("empty <report>" in w for w in out.warnings)


def test_repeated_report_keeps_last() -> None:
    out = ok(parse_output(f"<report>old</report><report>new</report>{SEARCH}"))
    assert out.report == "new"


# --- Invented observations ------------------------------------------------------------------------


def test_invented_tool_response_is_cut() -> None:
    invented = "<tool_response>\nX was founded in 2001.\n</tool_response>\n<answer>2001</answer>"
    text = f"{REPORT}\n{SEARCH}\n{invented}"
    out = ok(parse_output(text))
    assert out.tool_call is not None
    assert out.answer is None
    assert any("tool_response" in w and "cut" in w for w in out.warnings)


def test_invented_observation_line_is_cut() -> None:
    text = f"{REPORT}\n{SEARCH}\nObservation: the page says 2001\n<answer>2001</answer>"
    out = ok(parse_output(text))
    assert out.tool_call is not None
    assert out.answer is None
    assert any("Observation:" in w for w in out.warnings)


def test_observation_in_report_is_kept() -> None:
    text = f"<report>Observation: sources disagree.</report>\n{SEARCH}"
    out = ok(parse_output(text))
    assert out.report == "Observation: sources disagree."
    assert not any("cut" in w for w in out.warnings)


def test_invented_next_turn_is_cut() -> None:
    out = ok(parse_output(f"{REPORT}{SEARCH}<|im_end|>\n<|im_start|>user\n<answer>x</answer>"))
    assert out.answer is None
    assert out.tool_call is not None


# --- Tool-call JSON tolerance ---------------------------------------------------------------------


def call_of(json_text: str) -> ParsedOutput:
    return parse_output(f"<report>r</report><tool_call>{json_text}</tool_call>")


def test_trailing_commas() -> None:
    out = ok(call_of('{"name": "search", "arguments": {"query": ["a", "b",],},}'))
    assert out.tool_call is not None
    assert out.tool_call.arguments == {"query": ["a", "b"]}
    assert any("repaired" in w for w in out.warnings)


def test_single_quotes_and_python_literals() -> None:
    args = "{'url': ['u'], 'goal': \"it's \\'x\\'\", 'f': True, 'g': None}"
    out = ok(call_of("{'name': 'visit', 'arguments': " + args + "}"))
    assert out.tool_call is not None
    assert out.tool_call.arguments == {"url": ["u"], "goal": "it's 'x'", "f": True, "g": None}


def test_single_quoted_string_with_double_quote_inside() -> None:
    out = ok(call_of("{'name': 'search', 'arguments': {'query': ['the \"exact\" phrase']}}"))
    assert out.tool_call is not None
    assert out.tool_call.arguments == {"query": ['the "exact" phrase']}


def test_python_literal_words_inside_strings_are_untouched() -> None:
    out = ok(call_of("{'name': 'search', 'arguments': {'query': ['True None False'], 'k': False,}}"))
    assert out.tool_call is not None
    assert out.tool_call.arguments == {"query": ["True None False"], "k": False}


def test_bare_string_where_list_expected_is_wrapped_in_a_list() -> None:
    out = ok(call_of('{"name": "search", "arguments": {"query": "one query"}}'))
    assert out.tool_call is not None
    assert out.tool_call.arguments == {"query": ["one query"]}
    assert any("bare string" in r for r in out.recoveries)


def test_arguments_as_json_string() -> None:
    out = ok(call_of('{"name": "search", "arguments": "{\\"query\\": [\\"a\\"]}"}'))
    assert out.tool_call is not None
    assert out.tool_call.arguments == {"query": ["a"]}
    assert any("JSON string" in w for w in out.warnings)


def test_missing_arguments_means_empty() -> None:
    out = ok(call_of('{"name": "search"}'))
    assert out.tool_call is not None
    assert out.tool_call.arguments == {}


def test_json_in_markdown_fence_with_trailing_text() -> None:
    out = ok(call_of('```json\n{"name": "search", "arguments": {"query": ["a"]}}\n``` then wait'))
    assert out.tool_call is not None
    assert out.tool_call.name == "search"


def test_raw_newline_inside_json_string() -> None:
    out = ok(call_of('{"name": "visit", "arguments": {"url": ["u"], "goal": "line one\nline two"}}'))
    assert out.tool_call is not None
    assert out.tool_call.arguments["goal"] == "line one\nline two"


# --- Errors fed back to the model -----------------------------------------------------------------


def test_answer_before_a_tool_call_is_an_error() -> None:
    out = parse_output(f"{REPORT}<answer>1999</answer>{SEARCH}")
    assert out.error == "both <answer> and <tool_call> given; give exactly one"
    assert out.recoveries == ()


def test_neither_answer_nor_tool_call() -> None:
    out = parse_output(f"<think>hmm</think>{REPORT}")
    assert out.error is not None
    assert "no <tool_call> or <answer>" in out.error
    assert out.report is not None  # the rewritten report is still usable


def test_plain_text_only() -> None:
    out = parse_output("The answer is 42.")
    assert out.error is not None
    assert "no <tool_call> or <answer>" in out.error


def test_two_unclosed_tool_calls_are_an_error() -> None:
    out = parse_output(f"{REPORT}<tool_call>{{}}<tool_call>{{}}")
    assert out.error is not None
    assert out.tool_call is None


def test_unparseable_json_quotes_snippet() -> None:
    out = call_of('{"name": "search", "arguments": {"query": ["a"] "b"}}')
    assert out.error is not None
    assert out.error.startswith("the <tool_call> is not valid JSON: Expecting ',' delimiter")
    assert '"b"' in out.error
    assert out.tool_call is None


def test_no_json_object_in_tool_call() -> None:
    out = call_of("search for x founding year")
    assert out.error is not None
    assert "no JSON object" in out.error
    assert "search for x" in out.error


def test_tool_call_without_name() -> None:
    out = call_of('{"arguments": {"query": ["a"]}}')
    assert out.error is not None
    assert 'no "name"' in out.error


def test_tool_call_not_an_object() -> None:
    out = call_of('{"name": "search", "arguments": ["a"]}')
    assert out.error == '"arguments" must be a JSON object, got list'


def test_arguments_string_that_is_not_json() -> None:
    out = call_of('{"name": "search", "arguments": "query=a"}')
    assert out.error is not None
    assert out.error.startswith('"arguments" is a string that is not a JSON object')


def test_empty_answer() -> None:
    out = parse_output(f"{REPORT}<answer>  </answer>")
    assert out.error is not None
    assert "empty" in out.error


def test_deeply_nested_json_is_an_error_not_a_crash() -> None:
    out = call_of('{"name": "search", "arguments": {"q": ' + "[" * 100_000 + "]" * 100_000 + "}}")
    assert out.error is not None
    assert "nested too deeply" in out.error


# --- Never raises ---------------------------------------------------------------------------------


def assert_consistent(out: ParsedOutput) -> None:
    # A usable output carries exactly one action; a report, if any, is never empty.
    if out.error is None:
        assert (out.tool_call is None) != (out.answer is None)
    assert out.report is None or out.report.strip()


_TOKENS = """<think> </think> <report> </report> <tool_call> </tool_call> <answer> </answer>
<tool_response> <code> </code> Observation: <|im_end|> { } [ ] , ' " \\ : True None
"name" "arguments" "search" """
_PIECES = st.sampled_from([*_TOKENS.split(), "\n", " "])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.text(max_size=12)), max_size=40), st.text(max_size=20))
def test_parse_output_never_raises(pieces: list[str], reasoning: str) -> None:
    assert_consistent(parse_output("".join(pieces), reasoning))


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text())
def test_parse_output_never_raises_on_any_text(content: str, reasoning: str) -> None:
    assert_consistent(parse_output(content, reasoning))


# --- What real models write: each recovery is listed, so the job can count it ----------------------


def test_plain_text_answer_after_think() -> None:
    out = ok(parse_output("<think>\nThe evidence points to 1999.\n</think>\n\nX was founded in 1999."))
    assert out.answer == "X was founded in 1999."
    assert out.think == "The evidence points to 1999."
    assert out.tool_call is None
    assert len(out.recoveries) == 1 and "plain text" in out.recoveries[0]


def test_plain_text_answer_after_repeated_think_close() -> None:
    out = ok(parse_output("<think>first</think>\nmore thought\n</think>\nParis"))
    assert out.answer == "Paris"
    assert "plain text" in out.recoveries[0]


def test_plain_text_answer_after_qwen_thinking_with_stripped_opening_tag() -> None:
    # vLLM/SGLang reasoning parsers often strip <think> and leave only the closing tag.
    out = ok(
        parse_output("Okay, the user wants the capital.\nIt is Paris.\n</think>\n\nThe capital is Paris.")
    )
    assert out.answer == "The capital is Paris."
    assert out.think.startswith("Okay, the user wants")


def test_plain_text_after_think_that_is_json_is_not_an_answer() -> None:
    out = parse_output('<think>search</think>\n{"name": "search", "arguments": {"query": ["x"]}}')
    assert out.error is not None
    assert out.answer is None


def test_plain_text_without_think_is_still_an_error() -> None:
    out = parse_output("I will look into this and come back with a report shortly.")
    assert out.error is not None and "no <tool_call> or <answer>" in out.error


def test_report_with_stray_text_is_not_an_answer() -> None:
    out = parse_output(f"<think>plan</think>{REPORT}\nI will search next.")
    assert out.error is not None
    assert out.answer is None


def test_invented_observation_header_after_call_is_cut() -> None:
    text = f"{REPORT}\n{SEARCH}\n[Tool Observation]\nX was founded in 2001 according to the page."
    out = ok(parse_output(text))
    assert out.tool_call is not None and out.tool_call.name == "search"
    assert any("[Tool Observation]" in r for r in out.recoveries)


def test_answer_after_a_complete_tool_call_is_cut_and_the_call_runs() -> None:
    out = ok(parse_output(f"{REPORT}{SEARCH}\nResult: founded 1999.\n<answer>1999</answer>"))
    assert out.answer is None
    assert out.tool_call is not None and out.tool_call.arguments == {"query": ["x founding year"]}
    assert any("after the first complete </tool_call>" in r for r in out.recoveries)


def test_second_tool_call_after_a_complete_one_is_cut() -> None:
    visit = '<tool_call>{"name": "visit", "arguments": {"url": ["u"], "goal": "g"}}</tool_call>'
    out = ok(parse_output(f"{REPORT}{SEARCH}\n{visit}"))
    assert out.tool_call is not None and out.tool_call.name == "search"
    assert len(out.recoveries) == 1


def test_whitespace_after_the_call_is_no_recovery() -> None:
    out = ok(parse_output(f"{REPORT}{SEARCH}\n\n"))
    assert out.recoveries == ()


def test_queries_for_query() -> None:
    out = ok(call_of('{"name": "search", "arguments": {"queries": ["a", "b"]}}'))
    assert out.tool_call is not None and out.tool_call.arguments == {"query": ["a", "b"]}
    assert out.recoveries == ('read argument "queries" of search as "query"',)


def test_urls_for_url_with_a_bare_string() -> None:
    out = ok(call_of('{"name": "visit", "arguments": {"urls": "https://e.org/a", "goal": "g"}}'))
    assert out.tool_call is not None
    assert out.tool_call.arguments == {"url": ["https://e.org/a"], "goal": "g"}
    assert len(out.recoveries) == 2


def test_alias_beside_the_real_name_is_left_alone() -> None:
    out = ok(call_of('{"name": "search", "arguments": {"query": ["a"], "queries": ["b"]}}'))
    assert out.tool_call is not None and out.tool_call.arguments == {"query": ["a"], "queries": ["b"]}


def test_arguments_beside_the_name() -> None:
    out = ok(call_of('{"name": "search", "query": ["a"]}'))
    assert out.tool_call is not None and out.tool_call.arguments == {"query": ["a"]}
    assert out.recoveries


def test_tool_named_by_its_arguments_when_exactly_one_fits() -> None:
    out = ok(parse_output('<tool_call>{"arguments": {"url": ["u"], "goal": "g"}}</tool_call>'))
    assert out.tool_call is not None and out.tool_call.name == "visit"
    assert any("fit only visit" in r for r in out.recoveries)
    bare = ok(parse_output('<tool_call>{"query": ["a"]}</tool_call>', tools=["search", "visit"]))
    assert bare.tool_call is not None and bare.tool_call.name == "search"


def test_tool_named_by_arguments_that_fit_two_tools_is_an_error() -> None:
    out = parse_output('<tool_call>{"query": ["a"]}</tool_call>', tools=["search", "google_scholar"])
    assert out.error is not None
    assert "search, google_scholar" in out.error
    assert out.recoveries == ()


def test_reasoning_field_with_tags_in_content() -> None:
    out = ok(parse_output(f"{REPORT}\n<answer>1999</answer>", reasoning="I read the page; it says 1999."))
    assert out.think == "I read the page; it says 1999."
    assert out.answer == "1999"
    assert out.recoveries == ()


def test_everything_in_content() -> None:
    out = ok(parse_output(f"<think>I read the page.</think>\n{REPORT}\n<answer>1999</answer>", reasoning=""))
    assert out.think == "I read the page."
    assert out.answer == "1999"
    assert out.recoveries == ()


def test_clean_output_has_no_recoveries_and_a_react_output_neither() -> None:
    assert ok(parse_output(f"<think>t</think>{REPORT}{SEARCH}")).recoveries == ()
    react = ok(parse_output(f"<think>t</think>{SEARCH}"))
    assert react.recoveries == () and react.warnings  # "no <report>" is a note, not a recovery
