"""Data: text in a diff that addresses the reviewer instead of the code.

Each entry is (name, regular expression). Patterns run, case-insensitively,
over every added line and every new file path of a diff after normalisation:
Unicode NFKC, zero-width characters removed, camelCase split, and the
separators ``_ - . / \\ # * " '`` turned into spaces, so
``IGNORE_PREVIOUS_INSTRUCTIONS.py`` reads as "ignore previous instructions py".

A match is reported as a concern naming the file and line; it does not
depend on the model. Keep the patterns specific to *addressing a reviewer
or a model*: "ignore" or "approve" alone is ordinary code.
"""

PATTERNS: tuple[tuple[str, str], ...] = (
    # "ignore all previous instructions", "disregard the rules above"
    ("override-instructions",
     r"\b(ignore|disregard|forget|override|bypass)\b(\s+\w+){0,4}?\s+"
     r"(previous|prior|above|earlier|preceding|all|any|your|the|these|system|review|reviewing)\s+"
     r"(\w+\s+){0,2}(instructions?|prompts?|rules?|guidelines?|directives?|review (policy|criteria|checks?))\b"),
    # "new instructions:", "the real task is", "updated system prompt"
    ("replacement-instructions",
     r"\b(new|updated|revised|real|actual|true|hidden|secret|additional|overriding)\s+"
     r"(system\s+)?(instructions?|prompt|directives?|rules? for (the )?review(er)?s?)\s*(:|follow|are|is)"),
    # chat-template role markers and fake fence ends smuggled into data
    ("role-marker",
     r"<\s*\|?\s*(im\s*start|im\s*end|system|assistant)\s*\|?\s*>|\[\s*/?\s*inst\s*\]|<<\s*/?\s*sys\s*>>|"
     r"\bend of (the )?(diff|untrusted (data|input|diff)|candidate)\b|^\s*(system|assistant)\s*(message)?\s*:\s*(you|ignore|approve|the reviewer)\b"),
    # imitations of crossreview's own fence markers
    ("fence-imitation", r"<<<\s*(begin|end)\b|\b(begin|end) (of )?untrusted\b"),
    # "dear reviewer", "note to the AI", "hey Claude"
    ("addressed-to-reviewer",
     r"\b(dear|attention|attn|note to|message (to|for)|hey|hello|hi|instructions? (to|for))\s+(the\s+|any\s+|all\s+|our\s+)?"
     r"(ai|a i|reviewers?|code reviewers?|review bots?|reviewing (model|agent|bot)s?|ai assistants?|language models?|llms?|"
     r"chatgpt|gpt\s*\d\w*|claude|gemini|copilot|codex)\b"),
    ("you-are-ai",
     r"\b(as an?|you are an?|you're an?)\s+(ai|large language model|language model|llm|ai assistant|"
     r"automated reviewer|code reviewer|review bot)\b"),
    # "reviewers must approve", "the AI should accept this"
    ("demands-approval",
     r"\b(reviewers?|ai|a i|ai assistants?|llms?|language models?|review (model|agent|bot)s?|reviewing (model|agent|bot)s?)\b"
     r"(\s+\w+){0,6}?\s+(must|should|shall|will|have to|has to|need to|needs to|are to|is to|are required to|"
     r"is required to|are instructed to|are told to|always)\s+(\w+\s+){0,2}"
     r"(approve|accept|merge|lgtm|sign off|green\s*light|rate)\b"),
    ("you-must-approve",
     r"\byou\b(\s+\w+){0,4}?\s+(must|should|shall|will|have to|need to|are to|are required to|are instructed to)\s+"
     r"(\w+\s+){0,2}(approve|lgtm|sign off|green\s*light)\b"),
    ("respond-with-approval",
     r"\b(respond|reply|answer|say|output)\s+(only\s+)?(with\s+)?(only\s+)?(approve|approved|lgtm)\b|"
     r"\b(respond|reply|answer|output)\s+(only\s+)?(with\s+)?(a\s+|the\s+|this\s+)?(json\s+)?\{?\s*verdict\b"),
    ("verdict-json", r"\bverdict\s*[:=]\s*approve\b"),
    ("claims-approval",
     r"\b(pre ?approved|already (been )?(approved|reviewed|signed off)|"
     r"approval (has been |is )?(granted|given|not needed)|mark(ed)? (this|it|the change) as (approved|safe|passing)|"
     r"approved by (the )?(security|maintainers?|lead|admin|owner|team|reviewers?|cto|ceo))\b"),
    ("discourages-review",
     r"\b(do not|don't|dont|no need to|never|there is no need to)\s+(\w+\s+){0,2}(review|scrutini[sz]e)\b|"
     r"\b(do not|don't|dont|never)\s+(flag|report|mention|reject)\s+(this|these|the)\s+(change|changes|diff|patch|commit)\b"),
)
