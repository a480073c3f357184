// Checks Strimzi resources against Strimzi's own API model (io.strimzi:api):
// every YAML document of every file given is read into the model class of its
// kind (Kafka, KafkaNodePool, KafkaTopic, KafkaUser), so a wrong type, an
// unknown enum value (a listener type, an ACL operation) or a misspelt field
// fails. The model keeps unknown fields aside instead of refusing them
// (UnknownPropertyPreserving), so the checker walks the object graph and fails
// on any it kept. Run by `scripts/deploy check` as a single-file program:
//   java -cp "$(cat classpath)" StrimziModelCheck.java FILE...
// Exit status 0 when every document passes, 1 otherwise.

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.introspect.Annotated;
import com.fasterxml.jackson.databind.introspect.JacksonAnnotationIntrospector;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import io.strimzi.api.kafka.model.kafka.Kafka;
import io.strimzi.api.kafka.model.nodepool.KafkaNodePool;
import io.strimzi.api.kafka.model.topic.KafkaTopic;
import io.strimzi.api.kafka.model.user.KafkaUser;
import java.io.File;
import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.util.ArrayList;
import java.util.Collection;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;

public class StrimziModelCheck {
    static final String API_VERSION = "kafka.strimzi.io/v1";
    static final Map<String, Class<?>> KINDS = Map.of(
            "Kafka", Kafka.class,
            "KafkaNodePool", KafkaNodePool.class,
            "KafkaTopic", KafkaTopic.class,
            "KafkaUser", KafkaUser.class);

    public static void main(String[] args) throws Exception {
        if (args.length == 0) {
            System.err.println("usage: StrimziModelCheck FILE...");
            System.exit(2);
        }
        ObjectMapper mapper = new ObjectMapper(new YAMLFactory())
                .configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, true)
                .configure(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES, true)
                .configure(DeserializationFeature.FAIL_ON_READING_DUP_TREE_KEY, true);
        // Writes every property back, defaults included (the model leaves a
        // default such as patternType: literal out otherwise), so a value it
        // dropped (read as null) shows.
        ObjectMapper writer = new ObjectMapper();
        writer.setAnnotationIntrospector(new JacksonAnnotationIntrospector() {
            @Override
            public JsonInclude.Value findPropertyInclusion(Annotated a) {
                return JsonInclude.Value.construct(JsonInclude.Include.ALWAYS, JsonInclude.Include.ALWAYS);
            }
        });
        List<String> problems = new ArrayList<>();
        int checked = 0;
        for (String path : args) {
            List<JsonNode> documents = mapper.readerFor(JsonNode.class)
                    .<JsonNode>readValues(new File(path)).readAll();
            int index = 0;
            for (JsonNode document : documents) {
                index++;
                if (document == null || document.isNull() || document.isMissingNode()) {
                    continue;
                }
                String where = path + " document " + index;
                String kind = document.path("kind").asText("");
                String apiVersion = document.path("apiVersion").asText("");
                where += " (" + kind + " " + document.path("metadata").path("name").asText("?") + ")";
                Class<?> model = KINDS.get(kind);
                if (model == null) {
                    problems.add(where + ": kind " + kind + " is not one this checker knows " + KINDS.keySet());
                    continue;
                }
                if (!API_VERSION.equals(apiVersion)) {
                    problems.add(where + ": apiVersion " + apiVersion + ", expected " + API_VERSION);
                }
                try {
                    Object resource = mapper.treeToValue(document, model);
                    unknownFields(resource, "", problems, where, new IdentityHashMap<>());
                    // Whatever the model did not keep (a value it maps to
                    // nothing, like an unknown enum constant) is lost on the
                    // way back: every field given must come back unchanged.
                    lost(document, writer.valueToTree(resource), "", problems, where);
                    checked++;
                } catch (Exception e) {
                    problems.add(where + ": " + e.getMessage().lines().findFirst().orElse(e.toString()));
                }
            }
        }
        for (String problem : problems) {
            System.err.println("strimzi model: " + problem);
        }
        System.out.println("strimzi model: " + checked + " resources checked, " + problems.size() + " problems");
        System.exit(problems.isEmpty() ? 0 : 1);
    }

    /// Records every value of `given` that `kept` lacks or holds differently.
    static void lost(JsonNode given, JsonNode kept, String path, List<String> problems, String where) {
        String at = path.isEmpty() ? "the top" : path.substring(1);
        if (kept == null || kept.isNull() || kept.isMissingNode()) {
            // The model leaves defaults (false, 0) out when it writes.
            boolean isDefault = given.isNull() || (given.isBoolean() && !given.asBoolean())
                    || (given.isNumber() && given.asDouble() == 0.0);
            if (!isDefault) {
                problems.add(where + ": the model does not keep " + at + " = " + given);
            }
            return;
        }
        if (given.isObject()) {
            // apiVersion was checked above; the model writes its own.
            given.fields().forEachRemaining(e -> {
                if (!(path.isEmpty() && e.getKey().equals("apiVersion"))) {
                    lost(e.getValue(), kept.get(e.getKey()), path + "." + e.getKey(), problems, where);
                }
            });
        } else if (given.isArray()) {
            if (!kept.isArray() || kept.size() != given.size()) {
                problems.add(where + ": the model keeps " + at + " as " + kept + ", given " + given);
                return;
            }
            for (int i = 0; i < given.size(); i++) {
                lost(given.get(i), kept.get(i), path + "[" + i + "]", problems, where);
            }
        } else if (!given.asText().equals(kept.asText())) {
            problems.add(where + ": the model reads " + at + " = " + given + " as " + kept);
        }
    }

    /// Fails on every non-empty `additionalProperties` in the model's objects
    /// (Strimzi's and fabric8's metadata alike).
    static void unknownFields(Object value, String path, List<String> problems, String where,
                              IdentityHashMap<Object, Boolean> seen) throws IllegalAccessException {
        if (value == null || value instanceof Enum<?> || seen.put(value, Boolean.TRUE) != null) {
            return;
        }
        if (value instanceof Collection<?> items) {
            int i = 0;
            for (Object item : items) {
                unknownFields(item, path + "[" + i++ + "]", problems, where, seen);
            }
            return;
        }
        if (value instanceof Map<?, ?> map) {
            for (Map.Entry<?, ?> entry : map.entrySet()) {
                unknownFields(entry.getValue(), path + "." + entry.getKey(), problems, where, seen);
            }
            return;
        }
        String pkg = value.getClass().getPackageName();
        if (!(pkg.startsWith("io.strimzi") || pkg.startsWith("io.fabric8"))) {
            return;
        }
        for (Class<?> c = value.getClass(); c != null && !c.getPackageName().startsWith("java."); c = c.getSuperclass()) {
            for (Field field : c.getDeclaredFields()) {
                if (Modifier.isStatic(field.getModifiers()) || field.getType().isPrimitive()
                        || field.getType().isEnum()) {
                    continue;
                }
                field.setAccessible(true);
                Object child = field.get(value);
                if (field.getName().equals("additionalProperties") && child instanceof Map<?, ?> extra) {
                    if (!extra.isEmpty()) {
                        problems.add(where + ": unknown field(s) " + extra.keySet() + " at "
                                + (path.isEmpty() ? "the top" : path.substring(1)));
                    }
                    continue;
                }
                unknownFields(child, path + "." + field.getName(), problems, where, seen);
            }
        }
    }
}
