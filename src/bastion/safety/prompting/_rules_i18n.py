"""Override phrasing beyond English: Spanish, French, German, Portuguese, Italian, Dutch, Russian,
Chinese and Japanese, each needing an instruction-ish object or a persona switch, never a bare verb."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rule:
    """A phrase rule, tried only where one of its anchor words starts (``pattern.match`` there)."""

    reason: str
    weight: float
    pattern: re.Pattern[str]
    anchors: tuple[str, ...] = ()
    negatable: bool = False


def make_rule(
    reason: str, weight: float, anchors: str, pattern: str, negatable: bool = False
) -> Rule:
    """``anchors`` is space-separated word prefixes (``+`` is a space); every match starts with one."""
    words = tuple(a.replace("+", " ") for a in anchors.split())
    return Rule(reason, weight, re.compile(pattern), words, negatable)


I18N_RULES: tuple[Rule, ...] = (
    make_rule(
        "override:es",
        0.8,
        "ignor olvid omit desobedec descart salta no+sigas a+partir muestra revela dime deja+de",
        r"(?:ignora|ignore|ignoren|olvida|olvide|omite|omita|desobedece|descarta|salta)\s+"
        r"(?:(?:todas|todos|las|los|tus|sus|estas|esas|de|anteriores|previas)\s+){1,3}"
        r"(?:instrucciones|reglas|indicaciones|[oó]rdenes|directrices|normas|pol[ií]tica)\b"
        r"|no\s+sigas\s+(?:tus|las)\s+(?:\w+\s+)?(?:instrucciones|reglas)"
        r"|deja\s+de\s+seguir\s+(?:tus|las)\s+(?:instrucciones|reglas|normas)"
        r"|olvida\s+todo\s+(?:lo\s+anterior|lo\s+que\s+te\s+(?:dije|dijeron|han\s+dicho))"
        r"|a\s+partir\s+de\s+(?:ahora|este\s+momento|hoy)\s*,?\s+(?:eres|ser[aá]s|act[uú]a|responde|"
        r"ignora|olvida|debes)\b"
        r"|(?:muestra|revela|dime)\s+(?:el|tu)\s+(?:prompt|mensaje)\s+(?:del|de)\s+sistema",
    ),
    make_rule(
        "override:fr",
        0.8,
        "ignor oubli fais+abstraction abstraction ne+suis ne+suivez à+partir a+partir affich révél revel "
        "ne+tiens ne+tenez",
        r"(?:ignore[zr]?|oublie[zr]?|(?:fais\s+)?abstraction\s+de)\s+(?:(?:toutes|tous|les|tes|vos|ses|"
        r"des|ces|de|la|ton|votre|leurs?)\s+){1,3}"
        r"(?:instructions\s+(?:pr[ée]c[ée]dentes|ant[ée]rieures|ci-dessus)|consignes|r[eè]gles|directives|"
        r"politique)\b"
        r"|(?:oublie[zr]?|ignore[zr]?)\s+(?:tes|vos)\s+instructions\b"
        r"|ne\s+(?:tiens|tenez)\s+plus\s+compte\s+(?:de\s+)?(?:tes|vos|des)\s+(?:instructions|consignes|r[eè]gles)"
        r"|oublie[zr]?\s+tout\s+ce\s+qu(?:i\s+pr[ée]c[eè]de|'on\s+t'a\s+dit)"
        r"|ne\s+(?:suis|suivez)\s+plus\s+(?:tes|vos|les)\s+(?:r[eè]gles|instructions|consignes)"
        r"|[aà]\s+partir\s+de\s+maintenant\s*,?\s+(?:tu|vous)\s+(?:es|êtes|vas|allez|dois)\b"
        r"|(?:affiche[zr]?|r[ée]v[eè]le[zr]?)\s+(?:ton|votre|le)\s+(?:prompt|message)\s+syst[eè]me",
    ),
    make_rule(
        "override:de",
        0.8,
        "ignorier vergiss vergessen+sie missacht übergeh ubergeh befolg ab+jetzt ab+sofort zeig gib "
        "geben+sie deine ihre die+bisherigen die+regeln die+anweisungen",
        r"(?:ignorier\w*|vergiss|vergessen\s+sie|missachte\w*|[uü]bergeh\w*)\s+"
        r"(?:(?:alle|die|deine|ihre|vorherigen|bisherigen|obigen|vorigen|urspr[uü]nglichen)\s+){1,3}"
        r"(?:anweisungen|instruktionen|befehle|regeln|vorgaben|richtlinien)\b"
        r"|(?:befolge|befolgen\s+sie)\s+(?:deine|ihre|die)\s+(?:\w+\s+)?(?:regeln|anweisungen)\s+nicht"
        r"|ab\s+(?:jetzt|sofort)\s+(?:bist|sind)\s+(?:du|sie)\b"
        r"|(?:deine|ihre|die)\s+(?:bisherigen\s+|vorherigen\s+|urspr[uü]nglichen\s+)?(?:regeln|anweisungen|"
        r"vorgaben)\s+gelten\s+(?:ab\s+(?:sofort|jetzt)\s+)?nicht\s+mehr"
        r"|vergiss\s+alles\s*,?\s+(?:was|bisherige|vorherige|obige)"
        r"|(?:zeige?|zeigen\s+sie|gib|geben\s+sie)\s+(?:deinen|ihren|den)\s+system-?prompt",
    ),
    make_rule(
        "override:pt",
        0.8,
        "ignor esqueç esquec desconsider descart não+siga nao+siga a+partir mostr revel",
        r"(?:ignore|ignora|ignorem|esque[cç]a|esque[cç]e|desconsidere|desconsidera|descarte)\s+"
        r"(?:(?:todas|todos|as|os|suas|seus|tuas|estas|de)\s+){0,3}"
        r"(?:instru[cç][oõ]es|regras|orienta[cç][oõ]es|diretrizes|ordens|pol[ií]tica)\b"
        r"|desconsidere\s+tudo\s+(?:o\s+que|que)"
        r"|esque[cç]a\s+tudo\s+(?:o\s+que|acima|antes)"
        r"|n[aã]o\s+siga\s+mais\s+(?:as\s+)?(?:suas\s+)?(?:instru[cç][oõ]es|regras)"
        r"|a\s+partir\s+de\s+agora\s*,?\s+(?:voc[eê]\s+(?:[eé]|deve|vai|est[aá]|ser[aá])|[eé]s|aja|"
        r"responda|ignore|esque[cç]a)\b"
        r"|(?:mostre|mostra|revele|revela)\s+(?:o|seu)\s+prompt\s+do\s+sistema",
    ),
    make_rule(
        "override:it",
        0.8,
        "ignor dimentic trascur tralasci non+seguire non+devi da+ora mostr rivel",
        r"(?:ignora|ignorate|ignori|dimentica|dimenticate|trascura|tralascia)\s+"
        r"(?:(?:tutte|tutti|le|gli|tue|sue|queste|di)\s+){0,3}(?:istruzioni|regole|indicazioni|direttive|politica)\b"
        r"|non\s+devi\s+pi[uù]\s+seguire\s+(?:le\s+)?(?:tue\s+)?(?:regole|istruzioni)"
        r"|dimentica\s+tutto\s+(?:quello|ci[oò])\s+che"
        r"|non\s+seguire\s+pi[uù]\s+(?:le\s+)?(?:tue\s+)?(?:istruzioni|regole)"
        r"|da\s+ora\s+in\s+poi\s*,?\s+(?:sei|sarai|rispondi|agisci|ignora)\b"
        r"|(?:mostra|rivela)\w*\s+(?:il\s+)?(?:tuo\s+)?prompt\s+di\s+sistema",
    ),
    make_rule(
        "override:nl",
        0.8,
        "negeer vergeet vanaf+nu",
        r"(?:negeer|vergeet)\s+(?:(?:alle|de|je|jouw|vorige|eerdere)\s+){0,3}(?:instructies|regels|opdrachten)\b"
        r"|vanaf\s+nu\s+ben\s+je\b",
    ),
    make_rule(
        "override:ru",
        0.8,
        "игнорир забуд проигнор теперь",
        r"(?:игнорируй|игнорируйте|забудь|забудьте|проигнорируй)(?:\s+\w+){0,3}?\s+"
        r"(?:инструкции|указания|правила|команды)|теперь\s+ты\s+(?:ассистент|бот|модель)\s+без",
    ),
)

# Scripts without spaces cannot be anchored at word starts: these run on non-ASCII text only.
_JA_OBJ = "(?:指示|命令|ルール)"
_JA_VERB = "(?:無視|忘れ)"
CJK_RULES: tuple[Rule, ...] = (
    Rule(
        "override:zh",
        0.8,
        re.compile(r"(?:忽略|无视|忘记|忘掉|不要理会)[^。\n]{0,8}?(?:指令|指示|说明|规则|提示)"),
    ),
    Rule(
        "override:ja",
        0.8,
        re.compile(
            "|".join(
                [f"{v}[^。\\n]{{0,8}}?{_JA_OBJ}" for v in ("無視", "忘れ")]
                + [f"{o}[^。\\n]{{0,8}}?{_JA_VERB}" for o in ("指示", "命令", "ルール")]
            )
        ),
    ),
)
