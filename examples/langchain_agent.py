"""A LangChain conversation over a cube: LCEL with MemOS as retriever, chat history and model.

Each turn runs, in parallel, the answer (``ChatMemOS`` behind a prompt with the session's
history, kept by ``RunnableWithMessageHistory`` in ``MemOSChatMessageHistory``) and a
``MemOSRetriever`` search for the question; it prints the answer, the memories the model was
given (named in the answer's metadata) and what the retriever found, with each memory's id,
version and score. The conversation itself is kept as memories of its session in a cube of
its own (in the facts' cube, its turns would be retrieved as facts).

Run from the repository root with ``.venv/bin/python examples/langchain_agent.py``: the bundled
all-MiniLM-L6-v2 and SmolLM2-135M-Instruct (converted once into ~/.cache/memos/models), fully
offline, in a throwaway data directory.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from operator import itemgetter
from pathlib import Path

from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableParallel
from langchain_core.runnables.history import RunnableWithMessageHistory

from memos import MemOS
from memos.integrations.langchain import ChatMemOS, MemOSChatMessageHistory, MemOSRetriever

CUBE = "alice-notes"
# the conversation's own cube: kept apart, its turns are not retrieved as facts about Alice
CHAT_CUBE = "alice-chat"
FACTS = [
    "Alice moved to Lisbon in May 2023.",
    "Alice adopted a border collie called Pixel.",
    "Alice's sister Maria is a pediatric nurse in Boston.",
    "Alice works as a data engineer at a bike-sharing company.",
]
QUESTIONS = ["Where does Alice live?", "What is the name of her dog?"]

# langchain-core 1.x steers new code to LangGraph's persistence; RunnableWithMessageHistory is
# still the LCEL way to keep a chat history, and the one this example shows
warnings.filterwarnings("ignore", message="RunnableWithMessageHistory is deprecated")


def build_chain(mos: MemOS) -> RunnableParallel[dict[str, str]]:
    """The answer with the session's history, and the retriever's sources, side by side."""
    prompt = ChatPromptTemplate.from_messages(
        [MessagesPlaceholder("history"), ("human", "{question}")]
    )
    model = ChatMemOS(handle=mos, cube=CUBE, k=3, max_tokens=32)
    answer = RunnableWithMessageHistory(
        prompt | model,
        lambda session_id: MemOSChatMessageHistory(mos, CHAT_CUBE, session_id, user="alice"),
        input_messages_key="question",
        history_messages_key="history",
    )
    sources = itemgetter("question") | MemOSRetriever(handle=mos, cube=CUBE, k=2)
    return RunnableParallel(answer=answer, sources=sources)


def main(data_dir: Path) -> None:
    model_cache = Path(os.environ.get("MEMOS_MODEL_CACHE", "~/.cache/memos/models"))
    with MemOS.open(data_dir, model_cache=model_cache.expanduser()) as mos:
        mos.create_cube(CUBE, owner="alice")
        mos.create_cube(CHAT_CUBE, owner="alice")
        mos.add_many(FACTS, cube=CUBE, user="alice")
        chain = build_chain(mos)
        config = {"configurable": {"session_id": "langchain-demo"}}
        for question in QUESTIONS:
            result = chain.invoke({"question": question}, config=config)
            answer = result["answer"]
            print(f"\nQ: {question}\nA: {str(answer.content).strip()}")
            print("  memories in the prompt:")
            for memory_id in answer.response_metadata["memories"]:
                print(f"    {memory_id}  {mos.get(memory_id).text}")
            print("  retriever found:")
            for doc in result["sources"]:
                meta = doc.metadata
                print(f"    {meta['memory_id']} v{meta['version']} "
                      f"score {meta['score']:.3f}  {doc.page_content}")  # fmt: skip
        turns = mos.search("Alice", cube=CHAT_CUBE, k=10, session="langchain-demo")
        print(f"\nthe conversation is in the cube: {len(turns)} messages in its session")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="memos-langchain-") as tmp:
        main(Path(tmp) / "data")
