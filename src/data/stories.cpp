// The built-in corpus (see data.hpp, docs/data.md): simple children's stories from a fixed
// plot — opening, setting, a problem, an attempt that fails, help, resolution, ending — filled
// in from small word lists. Story i is drawn from the counter-based generator with stream i,
// so it depends on (seed, i) only.
//
// Sentences are templates with {slots}: {h} the hero's name (or "the cat"), {f} the friend,
// {he}/{his}/{him} the hero's pronouns, {fhe}/{fhis}/{fhim} the friend's; a capitalised slot
// ({He}, {F}) capitalises the first letter of its value.
#include <array>
#include <cctype>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "moebench/data.hpp"
#include "moebench/random.hpp"

namespace moebench {
namespace {

template <size_t N>
using Words = std::array<const char*, N>;

constexpr Words<16> kGirlNames = {"Lily", "Mia",  "Anna", "Zoe", "Emma", "Lucy", "Sue",   "Kim",
                                  "Ella", "Ruby", "Rosa", "Amy", "Sara", "Nina", "Molly", "Daisy"};
constexpr Words<16> kBoyNames = {"Tom",  "Ben",  "Sam", "Max", "Leo", "Jack", "Tim",   "Noah",
                                 "Finn", "Jake", "Bob", "Dan", "Joe", "Ned",  "Ollie", "Pete"};
constexpr Words<10> kPetNames = {"Pip",   "Spot",  "Fluffy", "Coco",    "Buddy",
                                 "Sunny", "Patch", "Bingo",  "Biscuit", "Pebble"};
constexpr Words<16> kAnimals = {"cat",    "dog",   "bunny", "bird", "frog",  "duck",
                                "fox",    "bear",  "mouse", "owl",  "puppy", "kitten",
                                "turtle", "horse", "pig",   "lamb"};
constexpr Words<4> kClimbers = {"bird", "squirrel", "monkey", "owl"};  // fetch things from up high
constexpr Words<12> kAnimalAdjectives = {"little", "big",   "fluffy",   "happy",
                                         "sleepy", "brave", "shy",      "silly",
                                         "tiny",   "kind",  "friendly", "gentle"};
constexpr Words<8> kChildAdjectives = {"happy", "kind",   "curious", "shy",
                                       "brave", "little", "funny",   "clever"};
constexpr Words<10> kColors = {"red",    "blue",   "green", "yellow", "pink",
                               "purple", "orange", "white", "brown",  "shiny"};
constexpr Words<14> kObjects = {"ball", "kite",    "hat",  "boat",    "teddy bear", "book", "drum",
                                "cup",  "balloon", "shoe", "toy car", "shell",      "doll", "box"};
struct Place {
  const char* name;
  const char* at;  // "in", "at", "on", "by": where one plays there
};
constexpr std::array<Place, 14> kPlaces = {{{"park", "in"},
                                            {"garden", "in"},
                                            {"forest", "in"},
                                            {"beach", "at"},
                                            {"farm", "on"},
                                            {"lake", "by"},
                                            {"hill", "on"},
                                            {"yard", "in"},
                                            {"zoo", "at"},
                                            {"river", "by"},
                                            {"meadow", "in"},
                                            {"pond", "by"},
                                            {"field", "in"},
                                            {"woods", "in"}}};
constexpr Words<12> kActivities = {"play outside",      "run and jump",       "sing songs",
                                   "draw pictures",     "read books",         "dance",
                                   "climb trees",       "play with blocks",   "look at the stars",
                                   "splash in puddles", "build sand castles", "bake cookies"};
constexpr Words<6> kWeather = {"sunny", "rainy", "windy", "cold", "warm", "bright"};
constexpr Words<4> kTimes = {"morning", "day", "afternoon", "evening"};
constexpr Words<7> kSearchSpots = {"under the bed",   "behind the door", "in the big box",
                                   "under the table", "in the kitchen",  "behind the tree",
                                   "under the chair"};
constexpr Words<5> kFoods = {"apple", "carrot", "piece of bread", "cookie", "banana"};
constexpr Words<4> kGrownUps = {"mom", "dad", "grandma", "grandpa"};
constexpr Words<6> kMorals = {
    "it is good to help others",  "sharing makes everyone happy",       "friends help each other",
    "it is good to ask for help", "being kind is the best thing to do", "you should never give up"};

// Counter-based draws for one story: draw n is random_bits(seed, story, n).
class Dice {
 public:
  Dice(uint64_t seed, uint64_t story) : seed_(seed), story_(story) {}
  size_t below(size_t n) {
    const size_t value =
        static_cast<size_t>(random_uniform(seed_, story_, counter_++) * static_cast<double>(n));
    return value < n ? value : n - 1;
  }
  bool chance(double probability) {
    return random_uniform(seed_, story_, counter_++) < probability;
  }
  template <size_t N>
  const char* pick(const Words<N>& words) {
    return words[below(N)];
  }

 private:
  uint64_t seed_, story_, counter_ = 0;
};

struct Character {
  std::string first;  // first mention: "a girl named Lily", "a fluffy dog"
  std::string ref;    // later mentions: "Lily", "the dog"
  std::string call;   // what others call them: "Lily", "dog" ("Thank you, dog!")
  std::string he, his, him;
};

Character make_child(Dice& dice, bool girl, const std::string& avoid) {
  std::string name;
  do {
    name = girl ? dice.pick(kGirlNames) : dice.pick(kBoyNames);
  } while (name == avoid);
  Character c;
  c.first = std::string("a ") + dice.pick(kChildAdjectives) + (girl ? " girl" : " boy") +
            " named " + name;
  c.ref = name;
  c.call = name;
  c.he = girl ? "she" : "he";
  c.his = girl ? "her" : "his";
  c.him = girl ? "her" : "him";
  return c;
}

Character make_animal(Dice& dice, const char* animal, bool named) {
  Character c;
  const bool girl = dice.chance(0.5);
  const char* adjective = dice.pick(kAnimalAdjectives);
  if (named) {
    const std::string name = dice.pick(kPetNames);
    c.first = std::string("a ") + adjective + " " + animal + " named " + name;
    c.ref = name;
    c.call = name;
  } else {
    c.first = std::string("a ") + adjective + " " + animal;
    c.ref = std::string("the ") + animal;
    c.call = animal;
  }
  c.he = girl ? "she" : "he";
  c.his = girl ? "her" : "his";
  c.him = girl ? "her" : "him";
  return c;
}

// "an orange ball", "a red ball".
std::string with_article(const std::string& noun) {
  const bool vowel = std::string_view("aeiou").find(noun.front()) != std::string_view::npos;
  return (vowel ? "an " : "a ") + noun;
}

// One story's text and the values of its slots.
class Story {
 public:
  explicit Story(std::string& out) : out_(out) {}
  void set(const std::string& slot, const std::string& value) { slots_[slot] = value; }
  const std::string& get(const std::string& slot) const { return slots_.at(slot); }
  void set_hero(const Character& c) { set_character(c, "h", "he", "his", "him"); }
  void set_friend(const Character& c) { set_character(c, "f", "fhe", "fhis", "fhim"); }
  // An animal met in the story becomes its friend: "the owl", called "owl".
  void set_friend_animal(const std::string& animal) {
    set("f", "the " + animal);
    set("f_call", animal);
  }

  // Appends one sentence (a space before it unless it starts a paragraph).
  void say(std::string_view text) {
    if (!paragraph_start_) out_ += ' ';
    paragraph_start_ = false;
    size_t i = 0;
    while (i < text.size()) {
      if (text[i] != '{') {
        out_ += text[i++];
        continue;
      }
      const size_t close = text.find('}', i);
      std::string slot(text.substr(i + 1, close - i - 1));
      const bool capital = std::isupper(static_cast<unsigned char>(slot[0])) != 0;
      slot[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(slot[0])));
      std::string value = slots_.at(slot);
      if (capital) value[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(value[0])));
      out_ += value;
      i = close + 1;
    }
  }
  void new_paragraph() {
    out_ += '\n';
    paragraph_start_ = true;
  }

 private:
  void set_character(const Character& c, const char* ref, const char* he, const char* his,
                     const char* him) {
    set(ref, c.ref);
    set(std::string(ref) + "_first", c.first);
    set(std::string(ref) + "_call", c.call);
    set(he, c.he);
    set(his, c.his);
    set(him, c.him);
  }
  std::string& out_;
  std::map<std::string, std::string> slots_;
  bool paragraph_start_ = true;
};

// What a problem leaves for the ending.
struct Outcome {
  const char* moral;     // the lesson that fits the problem
  bool friend_in_story;  // {f} took part (the ending may call them best friends)
};

// Each problem: the trouble, the hero's failed attempt, the help and the resolution.
Outcome lost_object(Story& s, Dice& d) {
  s.say("One day, {h} could not find {his} {obj}.");
  s.say("\"Where is my {obj}?\" {h} asked. {He} felt very sad.");
  // Three different places: two where the hero looks in vain, one where the friend finds it.
  size_t spots[3] = {d.below(kSearchSpots.size()), 0, 0};
  do spots[1] = d.below(kSearchSpots.size());
  while (spots[1] == spots[0]);
  do spots[2] = d.below(kSearchSpots.size());
  while (spots[2] == spots[0] || spots[2] == spots[1]);
  s.set("spot1", kSearchSpots[spots[0]]);
  s.set("spot2", kSearchSpots[spots[1]]);
  s.set("spot3", kSearchSpots[spots[2]]);
  s.say("{He} looked {spot1}. {He} looked {spot2}. But the {obj} was not there.");
  s.new_paragraph();
  s.say("Then {f_first} came by. \"I will help you look,\" said {f}.");
  s.say(d.chance(0.5) ? "{F} looked {spot3} and found the {obj}!"
                      : "They looked together, and {f} found the {obj} {spot3}!");
  s.say("\"Thank you, {f_call}!\" said {h}. {He} gave {f} a big hug.");
  return {d.chance(0.5) ? "friends help each other" : "it is good to ask for help", true};
}

Outcome stuck_up_high(Story& s, Dice& d) {
  s.say(d.chance(0.5) ? "Then the wind blew {his} {obj} up into a tall tree."
                      : "Then {his} {obj} got stuck on the roof of the house.");
  s.say("\"Oh no!\" said {h}. \"I cannot reach it.\"");
  s.say(d.chance(0.5) ? "{He} jumped and jumped, but {he} was too small."
                      : "{He} tried to climb up, but {he} slipped and fell down.");
  s.new_paragraph();
  const std::string climber = d.pick(kClimbers);
  s.set_friend_animal(climber);  // the helper is the friend of this story
  s.set("a_climber", with_article(climber));
  s.say("{A_climber} saw {him}. \"I can get it for you,\" said {f}.");
  s.say("{F} went up high and brought the {obj} back down.");
  s.say("{H} was so happy. \"Thank you, {f_call}!\" {he} said.");
  return {d.chance(0.5) ? "it is good to help others" : "friends help each other", true};
}

Outcome sad_animal(Story& s, Dice& d) {
  const std::string animal = d.pick(kAnimals);
  s.set_friend_animal(animal);  // the animal is the friend of this story
  s.set("adjective", d.pick(kAnimalAdjectives));
  static constexpr Words<4> kFeelings = {"sad", "hungry", "cold", "scared"};
  const size_t trouble = d.below(kFeelings.size());
  s.set("feeling", kFeelings[trouble]);
  s.say("{At} the {place}, {h} saw a {adjective} " + animal + " sitting all alone.");
  s.say("{F} looked {feeling}. \"Why are you {feeling}?\" asked {h}.");
  s.new_paragraph();
  switch (trouble) {
    case 0:
      s.say("\"I have no friends,\" said {f}.");
      s.say("{H} smiled. \"I will be your friend,\" {he} said.");
      s.say("They played with the {obj} all day long.");
      return {"being kind is the best thing to do", true};
    case 1:
      s.set("a_food", with_article(d.pick(kFoods)));
      s.say("\"I have not eaten all day,\" said {f}.");
      s.say("{H} had {a_food} in {his} bag. {He} gave it to {f}.");
      s.say("{F} ate it all up. \"Thank you!\" said {f}.");
      return {"it is good to help others", true};
    case 2:
      s.say("\"The wind is so cold,\" said {f}.");
      s.say("{H} took off {his} warm hat and put it on {f}.");
      s.say("Soon {f} was warm and happy.");
      return {"being kind is the best thing to do", true};
    default:
      s.say("\"I lost my mom,\" said {f}. \"I cannot find her.\"");
      s.say("\"Do not be scared,\" said {h}. \"We will find her together.\"");
      s.say("They looked all over the {place}, and soon they found the " + animal + "'s mom.");
      s.say("The little " + animal + " ran to her mom and was happy again.");
      return {"friends help each other", true};
  }
}

Outcome sharing(Story& s, Dice& d) {
  s.say("{F_first} came to play with {h}. {F} wanted to play with the {obj} too.");
  s.say("\"No, it is mine!\" said {h}. {F} was sad and began to cry.");
  s.new_paragraph();
  s.say("{H} thought about it. {He} did not like to see {f} sad.");
  s.say("\"I am sorry,\" said {h}. \"We can share. Let us play together.\"");
  s.say(d.chance(0.5) ? "They took turns with the {obj} and had lots of fun."
                      : "They played with the {obj} together, and they both laughed.");
  return {"sharing makes everyone happy", true};
}

Outcome broken_object(Story& s, Dice& d) {
  s.set("grownup", d.pick(kGrownUps));
  s.say("But then {h} dropped {his} {obj}, and it broke.");
  s.say("\"My {obj}!\" cried {h}. {He} was very sad.");
  s.new_paragraph();
  s.say("{His} {grownup} came to see. \"Do not worry,\" said {his} {grownup}. \"We can fix it.\"");
  s.say(d.chance(0.5) ? "They used some glue and fixed the {obj} together."
                      : "They worked hard, and soon the {obj} was as good as new.");
  s.say("{H} gave {his} {grownup} a big hug. \"Thank you!\" {he} said.");
  return {d.chance(0.5) ? "it is good to ask for help" : "you should never give up", false};
}

Outcome storm(Story& s, Dice& d) {
  s.say("Then the sky got dark, and it began to rain. Big drops fell on the {place}.");
  s.say("{H} felt scared. \"I want to go home,\" {he} said.");
  s.new_paragraph();
  s.say("{F_first} saw {him}. \"Come with me,\" said {f}. \"I know a dry place.\"");
  s.say(d.chance(0.5) ? "They ran under a big tree and waited."
                      : "They ran into a little barn and waited.");
  s.say("Soon the rain stopped, and the sun came out. They saw a big rainbow in the sky.");
  return {d.chance(0.5) ? "friends help each other" : "being kind is the best thing to do", true};
}

void write_story(std::string& out, uint64_t seed, uint64_t index) {
  Dice d(seed, index);
  Story s(out);
  // The hero: a child (three times in four) or a named animal.
  const bool animal_hero = d.below(4) == 0;
  const Character hero = animal_hero ? make_animal(d, d.pick(kAnimals), /*named=*/true)
                                     : make_child(d, d.chance(0.5), "");
  // The friend: another child or an animal met on the way.
  const bool child_friend = d.chance(0.5);
  const Character friend_ = child_friend ? make_child(d, d.chance(0.5), hero.ref)
                                         : make_animal(d, d.pick(kAnimals), /*named=*/false);
  s.set_hero(hero);
  s.set_friend(friend_);
  const Place& place = kPlaces[d.below(kPlaces.size())];
  s.set("place", place.name);
  s.set("at", place.at);
  s.set("obj", std::string(d.pick(kColors)) + " " + d.pick(kObjects));
  s.set("a_obj", with_article(s.get("obj")));
  s.set("activity", d.pick(kActivities));
  s.set("weather", d.pick(kWeather));
  s.set("time", d.pick(kTimes));

  // Opening and setting.
  switch (d.below(4)) {
    case 0: s.say("Once upon a time, there was {h_first}."); break;
    case 1: s.say("Once upon a time, in a small town, there lived {h_first}."); break;
    case 2: s.say("There was once {h_first}."); break;
    default: s.say("Long ago, there was {h_first}."); break;
  }
  s.say("{He} loved to {activity}.");
  s.say(d.chance(0.5) ? "{He} had {a_obj} that {he} loved very much."
                      : "{His} favorite toy was {a_obj}.");
  s.say(d.chance(0.5) ? "One {weather} {time}, {h} went to the {place} with {his} {obj}."
                      : "Every day, {he} liked to play {at} the {place}.");
  s.new_paragraph();

  Outcome outcome{};
  switch (d.below(6)) {
    case 0: outcome = lost_object(s, d); break;
    case 1: outcome = stuck_up_high(s, d); break;
    case 2: outcome = sad_animal(s, d); break;
    case 3: outcome = sharing(s, d); break;
    case 4: outcome = broken_object(s, d); break;
    default: outcome = storm(s, d); break;
  }
  s.new_paragraph();

  // Ending: one or two closing sentences, sometimes a moral.
  s.set("moral", d.chance(0.8) ? outcome.moral : d.pick(kMorals));
  switch (d.below(5)) {
    case 0:
      s.say(outcome.friend_in_story ? "From that day on, {h} and {f} were best friends."
                                    : "From that day on, {h} took good care of {his} {obj}.");
      break;
    case 1: s.say("{H} played {at} the {place} until the sun went down."); break;
    case 2: s.say("That night, {h} went to bed with a big smile."); break;
    case 3: s.say("It was the best day ever."); break;
    default: s.say("{H} was happy again."); break;
  }
  if (d.chance(0.6)) s.say("{H} learned that {moral}.");
  if (d.chance(0.2)) s.say("The end.");
}

}  // namespace

std::string generate_stories(uint64_t seed, size_t target_bytes) {
  std::string text;
  text.reserve(target_bytes + 2048);
  for (uint64_t index = 0; text.size() < target_bytes; ++index) {
    if (index > 0) text += kStorySeparator;
    write_story(text, seed, index);
  }
  return text;
}

}  // namespace moebench
