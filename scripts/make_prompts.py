#!/usr/bin/env python3
"""Regenerate the built-in voice prompts with espeak-ng and sox: English in
softswitch/sounds/*.flac, French in softswitch/sounds/fr/*.flac (``server.language``).

The files are committed (FLAC: half the size of WAV): the daemon needs neither tool at
run time for them. 8 kHz, 16-bit mono.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "softswitch" / "sounds"

PROMPTS = {
    "vm-greeting": "The person you are calling is not available. "
    "Please leave a message after the tone. Hang up or press pound when you are done.",
    "vm-enter-pin": "Please enter your PIN, followed by the pound key.",
    "vm-enter-mailbox": "Please enter your mailbox number, followed by the pound key.",
    "vm-incorrect": "That PIN is incorrect.",
    "vm-you-have": "You have",
    "vm-new-messages": "new messages.",
    "vm-new-message": "new message.",
    "vm-no-messages": "You have no messages.",
    "vm-message-menu": "Press 7 to delete this message, 9 to keep it, 1 to hear it again, "
    "or 8 to forward it.",
    "vm-deleted": "Message deleted.",
    "vm-saved": "Message saved.",
    "vm-no-more": "There are no more messages.",
    "vm-full": "This mailbox is full.",
    "goodbye": "Goodbye.",
    "connecting": "Please hold while I try to connect you.",
    "unavailable": "The number you have dialed is not available.",
    "not-allowed": "You are not allowed to call this number.",
    "hotdesk-extension": "Hot desk. Please enter your extension, followed by the pound key.",
    "hotdesk-in": "You are logged in on this phone.",
    "hotdesk-out": "You are logged out of this phone.",
    "conf-enter-code": "Please enter your conference code, followed by the pound key.",
    "conf-invalid": "That code is not valid.",
    "conf-wait-host": "Please wait for the host to join the conference.",
    "conf-locked": "This conference is locked.",
    "conf-full": "This conference is full.",
    "conf-there-are": "There are",
    "conf-participants": "participants in the conference.",
    "conf-muted": "You are muted.",
    "conf-unmuted": "You are unmuted.",
    "conf-mode-1": "All callers are muted. Press star pound 6 to unmute yourself.",
    "conf-mode-2": "Listen only mode.",
    "conf-mode-3": "All callers are unmuted.",
    "conf-lock": "The conference is now locked.",
    "conf-unlock": "The conference is now unlocked.",
    "conf-rec-start": "Recording started.",
    "conf-rec-stop": "Recording stopped.",
    "conf-tones": "Entry and exit tones changed.",
    "conf-ended": "The conference has ended.",
    "conf-menu": "Star 0, caller count. Star 1, leave. Star 6, mute or unmute. "
    "Star 2, listening mode. Star 5, lock. Star 9, record. Star 4, entry and exit tones.",
    "ivr-invalid": "That is not a valid choice.",
    "ivr-invalid-extension": "That extension is not valid.",
    "ivr-spell-last": "Please enter the first three letters of the person's last name.",
    "ivr-spell-first": "Please enter the first three letters of the person's first name.",
    "ivr-no-match": "No name matches these letters.",
    "ivr-for": "For",
    "ivr-press": "press",
    "blocked": "This number does not accept your calls.",
    "screen-say-name": "Please say your name after the tone.",
    "screen-call-from": "Call from",
    "screen-choice": "Press 1 to accept the call, or 2 to send it to voicemail.",
    "confirm-call-for": "Call for",
    "confirm-press-1": "Press 1 to accept the call.",
    "rec-started": "This call is being recorded.",
    "vm-forward-to": "Enter the mailbox to forward this message to, followed by the pound key.",
    "vm-record-intro": "Record an introduction after the tone, then press pound.",
    "vm-forwarded": "Message forwarded.",
    "vm-greetings-menu": "Press 1 to record your greeting, 2 for your business hours greeting, "
    "3 for your after hours greeting, 4 for a temporary greeting.",
    "vm-record-greeting": "Record your greeting after the tone, then press pound.",
    "vm-greeting-saved": "Greeting saved.",
    "queue-greeting": "Thank you for calling. All our agents are busy. "
    "Please stay on the line and your call will be answered in turn.",
    "queue-caller-number": "You are caller number",
    "queue-wait-about": "Your estimated wait time is about",
    "queue-minutes": "minutes.",
    "queue-less-than-minute": "Your estimated wait time is less than a minute.",
    "queue-press-1": "To leave a message instead, press 1.",
    "queue-agent-in": "You are logged in to your queues.",
    "queue-agent-out": "You are logged out of your queues.",
    "queue-agent-paused": "Your queue calls are paused.",
    "queue-agent-resumed": "Your queue calls are resumed.",
    "queue-not-member": "You are not a member of any queue.",
    **{
        f"num-{n}": word
        for n, word in enumerate(
            [
                "zero",
                "one",
                "two",
                "three",
                "four",
                "five",
                "six",
                "seven",
                "eight",
                "nine",
                "ten",
                "eleven",
                "twelve",
                "thirteen",
                "fourteen",
                "fifteen",
                "sixteen",
                "seventeen",
                "eighteen",
                "nineteen",
                "twenty",
            ]
        )
    },
}


FRENCH = {
    "vm-greeting": "Votre correspondant n'est pas disponible. Laissez un message après le bip. "
    "Raccrochez ou appuyez sur dièse quand vous avez terminé.",
    "vm-enter-pin": "Entrez votre code personnel, suivi de la touche dièse.",
    "vm-enter-mailbox": "Entrez le numéro de votre messagerie, suivi de la touche dièse.",
    "vm-incorrect": "Ce code est incorrect.",
    "vm-you-have": "Vous avez",
    "vm-new-messages": "nouveaux messages.",
    "vm-new-message": "nouveau message.",
    "vm-no-messages": "Vous n'avez aucun message.",
    "vm-message-menu": "Appuyez sur 7 pour effacer ce message, 9 pour le garder, "
    "1 pour le réécouter, ou 8 pour le transférer.",
    "vm-deleted": "Message effacé.",
    "vm-saved": "Message conservé.",
    "vm-no-more": "Il n'y a plus de message.",
    "vm-full": "Cette messagerie est pleine.",
    "goodbye": "Au revoir.",
    "connecting": "Veuillez patienter, nous recherchons votre correspondant.",
    "unavailable": "Le numéro demandé n'est pas disponible.",
    "not-allowed": "Vous n'êtes pas autorisé à appeler ce numéro.",
    "hotdesk-extension": "Poste partagé. Entrez votre numéro de poste, suivi de la touche dièse.",
    "hotdesk-in": "Vous êtes connecté sur ce poste.",
    "hotdesk-out": "Vous êtes déconnecté de ce poste.",
    "conf-enter-code": "Entrez votre code de conférence, suivi de la touche dièse.",
    "conf-invalid": "Ce code n'est pas valide.",
    "conf-wait-host": "Veuillez patienter jusqu'à l'arrivée de l'organisateur.",
    "conf-locked": "Cette conférence est verrouillée.",
    "conf-full": "Cette conférence est complète.",
    "conf-there-are": "Il y a",
    "conf-participants": "participants dans la conférence.",
    "conf-muted": "Votre micro est coupé.",
    "conf-unmuted": "Votre micro est rétabli.",
    "conf-mode-1": "Tous les participants sont en sourdine. "
    "Appuyez sur étoile dièse 6 pour reprendre la parole.",
    "conf-mode-2": "Mode écoute seule.",
    "conf-mode-3": "Tous les participants peuvent parler.",
    "conf-lock": "La conférence est verrouillée.",
    "conf-unlock": "La conférence est ouverte.",
    "conf-rec-start": "Enregistrement démarré.",
    "conf-rec-stop": "Enregistrement arrêté.",
    "conf-tones": "Les bips d'entrée et de sortie ont changé.",
    "conf-ended": "La conférence est terminée.",
    "conf-menu": "Étoile 0, nombre de participants. Étoile 1, quitter. Étoile 6, micro. "
    "Étoile 2, mode d'écoute. Étoile 5, verrouiller. Étoile 9, enregistrer. "
    "Étoile 4, bips d'entrée et de sortie.",
    "ivr-invalid": "Ce choix n'est pas valide.",
    "ivr-invalid-extension": "Ce numéro de poste n'est pas valide.",
    "ivr-spell-last": "Entrez les trois premières lettres du nom de famille de la personne.",
    "ivr-spell-first": "Entrez les trois premières lettres du prénom de la personne.",
    "ivr-no-match": "Aucun nom ne correspond à ces lettres.",
    "ivr-for": "Pour",
    "ivr-press": "appuyez sur",
    "blocked": "Ce numéro n'accepte pas vos appels.",
    "screen-say-name": "Veuillez dire votre nom après le bip.",
    "screen-call-from": "Appel de",
    "screen-choice": "Appuyez sur 1 pour prendre l'appel, ou sur 2 pour l'envoyer "
    "vers la messagerie.",
    "confirm-call-for": "Appel pour",
    "confirm-press-1": "Appuyez sur 1 pour prendre l'appel.",
    "rec-started": "Cet appel est enregistré.",
    "vm-forward-to": "Entrez la messagerie à laquelle transférer ce message, suivie de dièse.",
    "vm-record-intro": "Enregistrez une introduction après le bip, puis appuyez sur dièse.",
    "vm-forwarded": "Message transféré.",
    "vm-greetings-menu": "Appuyez sur 1 pour enregistrer votre annonce, 2 pour l'annonce des "
    "heures d'ouverture, 3 pour l'annonce hors des heures d'ouverture, 4 pour une annonce "
    "temporaire.",
    "vm-record-greeting": "Enregistrez votre annonce après le bip, puis appuyez sur dièse.",
    "vm-greeting-saved": "Annonce enregistrée.",
    "queue-greeting": "Merci de votre appel. Tous nos conseillers sont occupés. "
    "Restez en ligne, votre appel sera pris dans l'ordre d'arrivée.",
    "queue-caller-number": "Vous êtes l'appelant numéro",
    "queue-wait-about": "Votre temps d'attente estimé est d'environ",
    "queue-minutes": "minutes.",
    "queue-less-than-minute": "Votre temps d'attente estimé est de moins d'une minute.",
    "queue-press-1": "Pour laisser plutôt un message, appuyez sur 1.",
    "queue-agent-in": "Vous êtes connecté à vos files d'attente.",
    "queue-agent-out": "Vous êtes déconnecté de vos files d'attente.",
    "queue-agent-paused": "Vos appels de file d'attente sont en pause.",
    "queue-agent-resumed": "Vos appels de file d'attente reprennent.",
    "queue-not-member": "Vous n'êtes membre d'aucune file d'attente.",
    **{
        f"num-{n}": word
        for n, word in enumerate(
            [
                "zéro",
                "un",
                "deux",
                "trois",
                "quatre",
                "cinq",
                "six",
                "sept",
                "huit",
                "neuf",
                "dix",
                "onze",
                "douze",
                "treize",
                "quatorze",
                "quinze",
                "seize",
                "dix-sept",
                "dix-huit",
                "dix-neuf",
                "vingt",
            ]
        )
    },
}


def render(prompts: dict[str, str], voice: str, out: Path, tmp: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in prompts.items():
        raw = Path(tmp) / f"{name}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
        subprocess.run(
            [
                "sox",
                str(raw),
                "-r",
                "8000",
                "-c",
                "1",
                "-b",
                "16",
                str(out / f"{name}.flac"),
                "norm",
                "-6",
            ],
            check=True,
        )


def main(names: list[str]) -> None:
    """Every prompt, or only those named on the command line."""
    missing = set(PROMPTS) - set(FRENCH)
    if missing:
        raise SystemExit(f"no French text for {sorted(missing)}")
    english = {n: t for n, t in PROMPTS.items() if not names or n in names}
    french = {n: t for n, t in FRENCH.items() if not names or n in names}
    with tempfile.TemporaryDirectory() as tmp:
        render(english, "en-us", OUT, tmp)
        render(french, "fr-fr", OUT / "fr", tmp)
    print(f"{len(english)} prompts in {OUT} and {OUT / 'fr'}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
